"""The keys under which this project's files describe themselves: checkpoints (``.ckpt``) and exported
models (ONNX metadata). One definition, read by the writers and the readers alike; torch-free."""

INFO_KEY = "tsm_info"  # what using the model needs: class names, frames, input size, scale size, mean, std
DATA_KEY = "tsm_data"  # checkpoints: the resolved data config the model was trained on
MODE_KEY = "tsm_mode"  # exported files: "clip" or "stream"
BUFFERS_KEY = "tsm_buffers"  # stream files: the shift buffers' names and shapes
PRECISION_KEY = "tsm_precision"  # exported files: fp32, fp16 or int8
CALIBRATION_KEY = "tsm_calibration"  # int8 files: the data they were calibrated on
