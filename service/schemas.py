"""Response schemas of the HTTP API (pydantic; BentoML publishes them in its OpenAPI spec).
The gRPC messages in `rpc/slotserve/v1/slotserve.proto` mirror them field for field."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Rle(BaseModel):
    size: list[int] = Field(description="[height, width] of the input image")
    counts: str = Field(description="COCO compressed RLE string (pycocotools.mask.decode)")


class DetectedObject(BaseModel):
    slot: int = Field(description="slot index in the model (0..K-1)")
    code: int = Field(description="semantic code: index into the model's codebook")
    label: str | None = Field(description="the code's name, null when it has none")
    code_distance: float = Field(description="distance from the slot to its code")
    area: int = Field(description="mask area in input pixels")
    bbox: list[int] = Field(description="[x, y, width, height] in input pixels")
    mask: Rle


class ModelRef(BaseModel):
    name: str
    version: str


class Timings(BaseModel):
    decode: float
    preprocess: float
    inference: float = Field(description="waiting for the batched model call, queue included")
    postprocess: float
    total: float


class ModelCall(BaseModel):
    id: str = Field(description="the batched model call this image was part of")
    images: int = Field(description="images in that model call")
    compute_ms: float = Field(description="model time of the whole call")


class Decomposition(BaseModel):
    width: int
    height: int
    objects: list[DetectedObject]
    model: ModelRef
    timings_ms: Timings
    model_call: ModelCall


class BatchDecomposition(BaseModel):
    results: list[Decomposition]


class ErrorBody(BaseModel):
    error: str = Field(description="one line saying what was wrong")
    reason: str = Field(description="short machine label, as in slotserve_errors_total")
