"""A runpod worker laid out for the RunPod Hub: .runpod/Dockerfile, .runpod/hub.json (a
required MODEL_NAME with a preset), .runpod/tests.json with a plain and a streaming test."""

import os

import runpod


def handler(job):
    job_input = job["input"]
    if job_input.get("stream"):
        return stream(job_input)
    return {"model": os.environ["MODEL_NAME"], "text": job_input["prompt"].upper()}


def stream(job_input):
    return [{"token": word} for word in job_input["prompt"].split()]


runpod.serverless.start({"handler": handler})
