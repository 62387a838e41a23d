"""Graph compiler: extend/decode graphs per shape bucket -> MindIR and ONNX, and parity checks.

capture.py    layerwise graph cells, boundary markers, MindIR export
mindir.py     MindIR protobuf reader
boundaries.py operator-boundary instances from the markers
primitives.py MindSpore primitive -> ONNX emitters;  emit.py  the node buffer
weights.py    FP8 initializers + blocked DequantizeLinear
functions.py  boundary groups -> `ascend_v4` ONNX functions
lower.py      MindIR -> ONNX model;  compiler.py  the compile pipeline
artifacts.py  atomic output folder + manifest;  buckets.py  BxS shape buckets
parity.py     MindSpore vs onnxruntime vs oracle;  metrics.py + tolerances.yaml
"""
