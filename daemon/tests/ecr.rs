//! The ECR login janitord makes for a private agent image, against moto's ECR.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use janitor_testkit::Fixture;

#[tokio::test(flavor = "multi_thread")]
async fn an_ecr_agent_image_gets_a_registry_login() {
    let fx = Fixture::start(&[]).await;
    let registry = janitord::aws::ecr_registry(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/janitor-agent:latest",
    )
    .unwrap();
    let creds = janitord::aws::ecr_credentials(&fx.sdk, &registry)
        .await
        .unwrap();
    assert_eq!(creds.username, "AWS");
    assert_eq!(creds.password, "123456789012-auth-token");
    assert_eq!(
        creds.server,
        "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"
    );
    assert!(
        !format!("{creds:?}").contains("auth-token"),
        "Debug never prints the password"
    );
}
