"""``GET /v1/models``: one body that both official SDKs parse in strict mode."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from claude_code_proxy.api.deps import CatalogDep

router = APIRouter()


def model_list(catalog: CatalogDep) -> dict[str, Any]:
    data = [entry.as_json() for entry in catalog.entries]
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.get("/v1/models")
async def list_models(catalog: CatalogDep) -> dict[str, Any]:
    return model_list(catalog)


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, catalog: CatalogDep) -> dict[str, Any]:
    return catalog.get(model_id).as_json()
