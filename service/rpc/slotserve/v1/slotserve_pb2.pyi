from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecomposeRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    def __init__(self, image: _Optional[bytes] = ...) -> None: ...

class DecomposeBatchRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Rle(_message.Message):
    __slots__ = ("size", "counts")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    counts: str
    def __init__(self, size: _Optional[_Iterable[int]] = ..., counts: _Optional[str] = ...) -> None: ...

class DetectedObject(_message.Message):
    __slots__ = ("slot", "code", "label", "code_distance", "area", "bbox", "mask", "label_score")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CODE_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    BBOX_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    LABEL_SCORE_FIELD_NUMBER: _ClassVar[int]
    slot: int
    code: int
    label: str
    code_distance: float
    area: int
    bbox: _containers.RepeatedScalarFieldContainer[int]
    mask: Rle
    label_score: float
    def __init__(self, slot: _Optional[int] = ..., code: _Optional[int] = ..., label: _Optional[str] = ..., code_distance: _Optional[float] = ..., area: _Optional[int] = ..., bbox: _Optional[_Iterable[int]] = ..., mask: _Optional[_Union[Rle, _Mapping]] = ..., label_score: _Optional[float] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode", "preprocess", "inference", "postprocess", "total")
    DECODE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    decode: float
    preprocess: float
    inference: float
    postprocess: float
    total: float
    def __init__(self, decode: _Optional[float] = ..., preprocess: _Optional[float] = ..., inference: _Optional[float] = ..., postprocess: _Optional[float] = ..., total: _Optional[float] = ...) -> None: ...

class ModelCall(_message.Message):
    __slots__ = ("id", "images", "compute_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    images: int
    compute_ms: float
    def __init__(self, id: _Optional[str] = ..., images: _Optional[int] = ..., compute_ms: _Optional[float] = ...) -> None: ...

class Decomposition(_message.Message):
    __slots__ = ("width", "height", "objects", "model", "timings_ms", "model_call")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_CALL_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    objects: _containers.RepeatedCompositeFieldContainer[DetectedObject]
    model: ModelRef
    timings_ms: Timings
    model_call: ModelCall
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., objects: _Optional[_Iterable[_Union[DetectedObject, _Mapping]]] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., timings_ms: _Optional[_Union[Timings, _Mapping]] = ..., model_call: _Optional[_Union[ModelCall, _Mapping]] = ...) -> None: ...

class DecomposeBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Decomposition]
    def __init__(self, results: _Optional[_Iterable[_Union[Decomposition, _Mapping]]] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("id", "image")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    message: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("id", "result", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    result: Decomposition
    error: Error
    def __init__(self, id: _Optional[str] = ..., result: _Optional[_Union[Decomposition, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("manifest_json", "backend", "provider", "variant")
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    manifest_json: str
    backend: str
    provider: str
    variant: str
    def __init__(self, manifest_json: _Optional[str] = ..., backend: _Optional[str] = ..., provider: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...
