"""A learner's inference script whose model cannot load: the endpoint must fail with this message."""


def model_fn(model_dir):
    raise RuntimeError("cannot load weights: checksum mismatch in weights.json")


def predict_fn(inputs, model):
    return model(inputs)
