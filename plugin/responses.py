"""The HTTP service's answers and log lines: OpenSearch's error shape, JSON bodies, one JSON
object per log line (so a log pipeline can index them)."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import JSONResponse, Response

log = logging.getLogger("osneural.plugin.server")


def error_body(status: int, kind: str, reason: str) -> dict[str, Any]:
    """OpenSearch's error shape, so clients' error handling keeps working."""
    return {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind,
                      "reason": reason}, "status": status}


def error_response(status: int, kind: str, reason: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, kind, reason), status, headers=headers)


def json_response(data: Any, status: int = 200, pretty: bool = False,
                  headers: dict[str, str] | None = None) -> Response:
    """`data` as JSON (`?pretty` indents it, as OpenSearch does)."""
    return Response(json.dumps(data, indent=2 if pretty else None, ensure_ascii=False),
                    status_code=status, media_type="application/json", headers=headers)


def log_event(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str, sort_keys=True))
