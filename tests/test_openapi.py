"""The served OpenAPI document (`/docs.json`) describes every field of every answer."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow

JSON_ROUTES = ("/decompose", "/decompose_batch")


def undescribed(spec: dict, schema: dict, where: str, seen: set[str]) -> list[str]:
    """Paths (`Schema.field`) of properties without a description, walking $refs, array
    items and unions below `schema`; `seen` collects every property visited."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in {s.split(".")[0] for s in seen}:
            return []
        return undescribed(spec, spec["components"]["schemas"][name], name, seen)
    missing = []
    for field, prop in schema.get("properties", {}).items():
        path = f"{schema.get('title', where)}.{field}"
        seen.add(path)
        if not prop.get("description", "").strip():
            missing.append(path)
        missing += undescribed(spec, prop, path, seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            missing += undescribed(spec, schema[key], where, seen)
    for option in schema.get("anyOf", []) + schema.get("allOf", []):
        missing += undescribed(spec, option, where, seen)
    return missing


@pytest.fixture(scope="module")
def spec(server) -> dict:
    return httpx.get(f"{server.url}/docs.json", timeout=30).json()


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_every_response_property_has_a_description(spec, route):
    schema = spec["paths"][route]["post"]["responses"]["200"]["content"]["application/json"]
    seen: set[str] = set()
    assert undescribed(spec, schema["schema"], route, seen) == []
    # The walk reached the nested schemas, so an empty list means something.
    fields = {p.split(".", 1)[-1] for p in seen}
    assert {"code_distance", "bbox", "size", "counts", "total", "id", "version"} <= fields


def test_the_documented_fields_are_the_answered_fields(server, spec):
    """Each documented schema names exactly the keys a real answer has."""
    from loadtests.images import encode
    from training.data.shapes import generate_batch

    data = encode(generate_batch(1, seed=3)[0].image)
    answer = httpx.post(f"{server.url}/decompose", files={"image": ("s.png", data)}).json()
    schemas = spec["components"]["schemas"]
    assert set(answer) == set(schemas["Decomposition"]["properties"])
    assert set(answer["objects"][0]) == set(schemas["DetectedObject"]["properties"])
    assert set(answer["objects"][0]["mask"]) == set(schemas["Rle"]["properties"])
    for key, name in (
        ("model", "ModelRef"),
        ("timings_ms", "Timings"),
        ("model_call", "ModelCall"),
    ):
        assert set(answer[key]) == set(schemas[name]["properties"]), key
