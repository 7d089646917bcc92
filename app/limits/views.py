"""Request and response shapes of ``/api/v1/limits`` and ``/api/v1/tasks/{id}/limits``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _whole_number(value: object) -> object:
    """JSON Schema's integer: 427 and 427.0 are, "427", true and 1.5 are not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value



_RESET = " null: back to the DF_* setting."


class LimitsChange(BaseModel):
    """Any subset of the limits; a field left out is unchanged, a null goes back to the setting.

    The bounds are app.limits.model.FIELDS (tests/test_live_limits.py checks that they agree)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    downLinkKiB: Annotated[int, Field(ge=0, le=10485760), BeforeValidator(_whole_number)] | None = Field(
        None, description="downLink (KiB/s) sent in piece tasks; 0 = none." + _RESET)
    seedUploadKiBps: Annotated[int, Field(ge=0, le=104857600), BeforeValidator(_whole_number)] | None = Field(
        None, description="Seed-cache upload bandwidth (KiB/s) shared by the live replicas; 0 = unlimited." + _RESET)
    peerDownLimit: Annotated[int, Field(ge=1, le=64), BeforeValidator(_whole_number)] | None = Field(
        None, description="Pieces one client downloads at once." + _RESET)
    peerUpLimit: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_whole_number)] | None = Field(
        None, description="Uploads handed to one peer at once." + _RESET)
    cdnLoadLimit: Annotated[int, Field(ge=1, le=10000), BeforeValidator(_whole_number)] | None = Field(
        None, description="Pieces from the seed cache at once, per task." + _RESET)


class TaskLimitsChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    downLinkKiB: Annotated[int, Field(ge=0, le=10485760), BeforeValidator(_whole_number)] | None = Field(
        ..., description="This task's downLink (KiB/s); null: the cluster's.")


class LimitValues(BaseModel):
    downLinkKiB: int
    seedUploadKiBps: int
    peerDownLimit: int
    peerUpLimit: int
    cdnLoadLimit: int


class LimitsView(BaseModel):
    limits: LimitValues = Field(description="In force now (an override, else the setting).")
    defaults: LimitValues = Field(description="The DF_* settings of the replica that answered.")
    overrides: dict[str, int] = Field(description="What PUT /api/v1/limits set (kept in Redis).")
    liveReplicas: int = Field(description="Replicas with a fresh heartbeat, sharing the seed upload bandwidth.")
    seedUploadPerReplicaKiBps: int = Field(description="seedUploadKiBps / liveReplicas; 0 = unlimited.")
    appliedWithinSeconds: float = Field(description="Every replica applies a change within this time.")


class TaskLimitsView(BaseModel):
    taskId: str
    downLinkKiB: int = Field(description="What this task's piece tasks carry.")
    override: int | None = Field(None, description="The task's own downLinkKiB, if set.")
