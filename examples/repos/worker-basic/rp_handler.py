"""A runpod serverless worker in worker-basic's shape: the Dockerfile copies the handler but
not test_input.json, so the image's CMD alone exits 1 (the SDK looks for that file); the
worker's own test passes in the SDK's server mode."""

import time

import runpod


def handler(job):
    job_input = job["input"]
    prompt = job_input.get("prompt", "world")
    time.sleep(min(float(job_input.get("seconds", 0)), 2.0))
    return f"Hello, {prompt}!"


runpod.serverless.start({"handler": handler})
