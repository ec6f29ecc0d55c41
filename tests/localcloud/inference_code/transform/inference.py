"""A learner's inference script with one transform_fn instead of input_fn/predict_fn/output_fn."""


def model_fn(model_dir):
    return {"scale": 3}


def transform_fn(model, request_body, content_type, accept):
    numbers = [float(x) for x in request_body.decode().split(",")]
    return ",".join(str(model["scale"] * x) for x in numbers), "text/csv"
