"""The JSON shapes each client expects (HARBOR.md §2, §3; PROTOCOL §6.4)."""

from __future__ import annotations

from typing import Any

from app.core.masking import mask_headers, mask_text, mask_url, mask_value
from app.core.timefmt import rfc3339_ms
from app.preheat.model import PreheatRecord, Status
from app.preheat.store import OapiJob

# The Open API result names a scheduler cluster; this supernode is the one cluster there is.
SCHEDULER_CLUSTER_ID = 1


def legacy_info(record: PreheatRecord, fail_status: str) -> dict[str, Any]:
    """``GET /preheats/{id}``: PreheatInfo. An unfinished job shows finishTime at Unix 0, as Go did."""
    return {
        "ID": record.id,
        "status": fail_status if record.status == Status.FAILED else record.status,
        "startTime": rfc3339_ms(record.start_ms),
        "finishTime": rfc3339_ms(record.finish_ms if record.finished else 0),
        "errorMsg": mask_text(record.error),
    }


def progress(record: PreheatRecord) -> list[dict[str, Any]]:
    return [
        {"url": mask_url(layer.url), "digest": layer.digest, "taskId": layer.tid, "status": layer.state,
         "seededBytes": layer.bytes, "totalBytes": layer.total, "error": mask_text(layer.error)}
        for layer in record.layers
    ]


def redacted(headers: dict[str, str]) -> dict[str, str]:
    """Listings must not hand out the registry tokens Harbor passed (any auth/token/key/... header)."""
    return mask_headers(headers)


def legacy_task(record: PreheatRecord) -> dict[str, Any]:
    """``GET /preheats``: the legacy internal task record, Go field names, times in ms.

    The children are the blob tasks; their ids are the ids the legacy supernode gave its child preheats.
    """
    request = record.request
    return {
        "ID": record.id, "URL": mask_url(request.url), "Type": request.type, "Filter": request.filter,
        "Identifier": request.identifier, "Headers": redacted(request.headers), "ParentID": "",
        "Children": [layer.tid for layer in record.layers], "Status": record.status,
        "StartTime": record.start_ms, "FinishTime": record.finish_ms if record.finished else 0,
        "ErrorMsg": mask_text(record.error),
    }


def oapi_state(record: PreheatRecord | None) -> str:
    """Only PENDING, SUCCESS and FAILURE: Harbor 2.12+ fails the job on any other state."""
    if record is None or record.status == Status.FAILED:
        return "FAILURE"
    return "SUCCESS" if record.status == Status.SUCCESS else "PENDING"


def oapi_job(job: OapiJob, record: PreheatRecord | None, hostname: str, ip: str) -> dict[str, Any]:
    state = oapi_state(record)
    updated = max(job.created_ms, record.updated_ms if record is not None else 0)
    error = mask_text(record.error) if record is not None else f"preheat {job.preheat_id} no longer exists"
    success, failure = [], []
    for layer in record.layers if record is not None else ():
        if layer.state == Status.SUCCESS:
            success.append({"url": mask_url(layer.url), "hostname": hostname, "ip": ip})
        elif layer.state == Status.FAILED:
            failure.append({"url": mask_url(layer.url), "hostname": hostname, "ip": ip,
                            "description": mask_text(layer.error)})
    return {
        "id": job.id,
        "created_at": rfc3339_ms(job.created_ms),
        "updated_at": rfc3339_ms(updated),
        "is_del": 0,
        "task_id": f"group_{job.preheat_id}",
        "bio": "",
        "type": "preheat",
        "state": state,
        "args": mask_value(job.args),  # a presigned url, a token header: shown masked
        "result": {
            "job_states": [
                {
                    "error": error,
                    "results": [
                        {"success_tasks": success, "failure_tasks": failure,
                         "scheduler_cluster_id": SCHEDULER_CLUSTER_ID}
                    ],
                    "state": state,
                    "task_uuid": f"task_{job.preheat_id}",
                    "task_name": "preheat",
                    "created_at": rfc3339_ms(record.start_ms if record is not None else job.created_ms),
                    "ttl": 0,
                }
            ]
        },
        "user_id": 0,
        "scheduler_clusters": [{"id": SCHEDULER_CLUSTER_ID}],
        "seed_peer_clusters": [],
    }
