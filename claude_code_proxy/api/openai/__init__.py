"""The OpenAI surface, served under ``/openai/v1``: chat completions and models."""

from fastapi import APIRouter

from claude_code_proxy.api.openai import chat, models

router = APIRouter()
router.include_router(chat.router)
router.include_router(models.router)
