"""Inbound wire pieces more than one surface accepts in the same form.

Unknown fields are accepted and ignored (future SDK fields must not break clients).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class Inbound(BaseModel):
    model_config = ConfigDict(extra="allow")


class ThinkingEnabled(Inbound):
    type: Literal["enabled"]
    budget_tokens: StrictInt = Field(ge=1024)


class ThinkingAdaptive(Inbound):
    type: Literal["adaptive"]


class ThinkingDisabled(Inbound):
    type: Literal["disabled"]


Thinking = Annotated[ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled, Field(discriminator="type")]
