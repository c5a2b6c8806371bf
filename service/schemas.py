"""Response schemas of the HTTP API (pydantic; BentoML publishes them in its OpenAPI spec at
`/docs.json`, each field with its description). The gRPC messages in
`rpc/slotserve/v1/slotserve.proto` mirror them field for field. `docs/api.md` is the reference
for people, with real answers."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Rle(BaseModel):
    """An object's mask as COCO run-length encoding, at the input's own resolution.
    Decode with `pycocotools.mask.decode({"size": size, "counts": counts.encode()})`."""

    size: list[int] = Field(
        description="[height, width] of the mask, equal to the input's: COCO's order, the "
        "reverse of the top-level `width`, `height`"
    )
    counts: str = Field(
        description="COCO compressed RLE string: run lengths of 0s then 1s, pixels taken "
        "column by column (column-major, as COCO stores masks)"
    )


class DetectedObject(BaseModel):
    """One object: the pixels one slot won, with the semantic code of that slot."""

    slot: int = Field(
        description="index of the model's slot (0..K-1) that holds this object; when the "
        "model merged slots sharing an object, the slot that represents them"
    )
    code: int = Field(
        description="semantic code: index (0..E-1) of the codebook vector nearest to the slot; "
        "objects of one kind tend to share a code across images"
    )
    label: str | None = Field(
        description="what the object is, from its code: a category of the labelled scenes the "
        'model\'s codes were named on, or "background"; null where the code does not name a '
        "category reliably (the manifest's `code_labels`, picked so that labels given on "
        "validation scenes were right >= 80% of the time, background 100%)"
    )
    label_score: float | None = Field(
        description="share (0..1) of the code's slots on the labelled naming scenes whose truth "
        "is `label` (for a null label: the best candidate's share); null for bundles without "
        "measured labels"
    )
    code_distance: float = Field(
        description="Euclidean distance from the slot to its code vector, in the model's slot "
        "space (unbounded, >= 0; comparable only within one model): lower means the slot is "
        "typical of its code. Shipped model: median about 2.4, 95% below about 3.7, while "
        "codes lie about 3.4 from their nearest other code"
    )
    area: int = Field(description="mask area: the number of input pixels in the mask")
    bbox: list[int] = Field(
        description="[x, y, width, height] of the mask's bounding box in input pixels: x, y "
        "are the top-left corner counted from the image's top-left (COCO's order)"
    )
    mask: Rle = Field(
        description="the mask, COCO RLE; masks of one image are disjoint and cover the image"
    )


class ModelRef(BaseModel):
    """The model bundle that answered."""

    name: str = Field(description="the bundle's name, from its manifest")
    version: str = Field(description="the bundle's version, from its manifest")


class Timings(BaseModel):
    """Where this image's time went in the server, in milliseconds."""

    decode: float = Field(description="decoding the upload into RGB pixels (EXIF orientation)")
    preprocess: float = Field(description="resizing the pixels to the model's input size")
    inference: float = Field(
        description="from handing the image to the batcher until its outputs came back: "
        "queueing plus the batched model call (for a multi-image request, all its calls)"
    )
    postprocess: float = Field(
        description="masks to the input's resolution, argmax, RLE encoding and boxes"
    )
    total: float = Field(
        description="the sum of the four stages above (not the HTTP transfer or JSON encoding)"
    )


class ModelCall(BaseModel):
    """The batched model call this image was computed in (HTTP and gRPC requests share them)."""

    id: str = Field(
        description="`<pid>-<n>`: the model worker's process id and the call's sequence number "
        "in that process; images (of any requests) with the same id were computed in one call. "
        "Unique while the server runs, not across restarts"
    )
    images: int = Field(description="images in that model call, from all requests batched in it")
    compute_ms: float = Field(description="model time of the whole call (all its images), ms")


class Decomposition(BaseModel):
    """One image decomposed into objects."""

    width: int = Field(description="width of the input image in pixels")
    height: int = Field(description="height of the input image in pixels")
    objects: list[DetectedObject] = Field(
        description="one entry per non-empty slot, in slot order; empty slots are left out"
    )
    model: ModelRef = Field(description="the model that answered")
    timings_ms: Timings = Field(description="server-side time per stage for this image, ms")
    model_call: ModelCall = Field(description="the batched model call this image was part of")


class BatchDecomposition(BaseModel):
    """Several images decomposed, in the order they were sent."""

    results: list[Decomposition] = Field(description="one decomposition per image, in order")


class ErrorBody(BaseModel):
    """A refused request (4xx, or 503 when overloaded)."""

    error: str = Field(description="one line saying what was wrong")
    reason: str = Field(description="short machine label, as in slotserve_errors_total")
