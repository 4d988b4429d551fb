//! The one error type of the outside services: which service, which call, on what, and the
//! [`ErrorKind`] that tells a caller whether a retry can help.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// What kind of failure a service call met; callers branch on it, never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The service asked us to slow down (HTTP 429, `Throttling*`, `SlowDown`): retry later.
    Throttled,
    /// The service could not be reached or failed itself (connection refused, timeout, 5xx):
    /// retry later.
    Unavailable,
    /// What was asked for does not exist (404, `NoSuchKey`, `ResourceNotFoundException`).
    NotFound,
    /// A precondition did not hold (HTTP 409/412): someone else wrote first.
    Conflict,
    /// The request itself was refused (bad input, no permission): a retry gets the same answer.
    Rejected,
}

impl ErrorKind {
    /// Whether trying the same call again later can succeed.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Unavailable)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call to an outside service.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {action} on {target} failed ({kind}): {message}")]
pub struct ServiceError {
    /// `SQS`, `S3`, `CloudWatch Logs`, `Auto Scaling`, `ECR`, `IMDS`, `Docker`, `NVML`.
    pub service: &'static str,
    /// The API call: `PutObject`, `ReceiveMessage`, …
    pub action: &'static str,
    /// What it was about: a queue URL, `s3://bucket/key`, an instance id, an image.
    pub target: String,
    pub kind: ErrorKind,
    /// The cause, with its whole chain, on one line.
    pub message: String,
}

impl ServiceError {
    pub fn new(
        service: &'static str,
        action: &'static str,
        target: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> ServiceError {
        ServiceError {
            service,
            action,
            target: target.into(),
            kind,
            message: message.into(),
        }
    }

    /// An AWS SDK error, classified.
    pub fn aws<E, R>(
        service: &'static str,
        action: &'static str,
        target: impl Into<String>,
        e: SdkError<E, R>,
    ) -> ServiceError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HasStatus,
    {
        let kind = classify(&e);
        ServiceError::new(service, action, target, kind, describe(e))
    }

    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }
}

/// An HTTP response that can say its status code (the SDK's raw response).
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Service error codes that mean "slow down".
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "PriorRequestNotComplete",
];

/// Service error codes that mean "no such thing".
const NOT_FOUND_CODES: &[&str] = &[
    "NoSuchKey",
    "NoSuchBucket",
    "NotFound",
    "ResourceNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "ValidationError.NotFound",
];

/// Sorts an SDK error into an [`ErrorKind`]: transport failures and 5xx are `Unavailable`,
/// throttling codes and 429 `Throttled`, 404 `NotFound`, 409/412 `Conflict`, the rest `Rejected`.
pub fn classify<E: ProvideErrorMetadata, R: HasStatus>(e: &SdkError<E, R>) -> ErrorKind {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorKind::Unavailable
        }
        SdkError::ConstructionFailure(_) => ErrorKind::Rejected,
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or_default();
            kind_of(ctx.raw().status_code(), code)
        }
        _ => ErrorKind::Unavailable,
    }
}

/// The kind for an HTTP status and a service error code.
pub fn kind_of(status: u16, code: &str) -> ErrorKind {
    if THROTTLING_CODES.contains(&code) || status == 429 {
        ErrorKind::Throttled
    } else if status >= 500 || code == "ServiceUnavailable" || code == "InternalError" {
        ErrorKind::Unavailable
    } else if NOT_FOUND_CODES.contains(&code) || status == 404 {
        ErrorKind::NotFound
    } else if status == 409 || status == 412 || code == "PreconditionFailed" {
        ErrorKind::Conflict
    } else {
        ErrorKind::Rejected
    }
}

/// The SDK's error with its whole cause chain, as one line.
pub fn describe<E: std::error::Error>(e: E) -> String {
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_status_and_code() {
        let cases = [
            ((400, "ThrottlingException"), ErrorKind::Throttled),
            ((400, "Throttling"), ErrorKind::Throttled),
            ((503, "SlowDown"), ErrorKind::Throttled),
            ((429, ""), ErrorKind::Throttled),
            ((500, "InternalError"), ErrorKind::Unavailable),
            ((502, ""), ErrorKind::Unavailable),
            ((404, "NoSuchKey"), ErrorKind::NotFound),
            ((400, "ResourceNotFoundException"), ErrorKind::NotFound),
            (
                (400, "AWS.SimpleQueueService.NonExistentQueue"),
                ErrorKind::NotFound,
            ),
            ((412, "PreconditionFailed"), ErrorKind::Conflict),
            ((409, "ConditionalRequestConflict"), ErrorKind::Conflict),
            ((403, "AccessDenied"), ErrorKind::Rejected),
            ((400, "InvalidParameterValue"), ErrorKind::Rejected),
        ];
        for ((status, code), want) in cases {
            assert_eq!(kind_of(status, code), want, "{status} {code}");
        }
        assert!(ErrorKind::Throttled.retryable() && ErrorKind::Unavailable.retryable());
        assert!(!ErrorKind::Rejected.retryable() && !ErrorKind::NotFound.retryable());
    }
}
