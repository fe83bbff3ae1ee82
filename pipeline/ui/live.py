"""Which model versions the model server serves now, asked live: TF Serving's REST model status
(`GET /v1/models/NAME`), with a short timeout so that a server that is down never slows a page."""
from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import aiohttp

TIMEOUT_S = 0.5  # a local server answers in milliseconds; a page must not wait for one that does not


async def served_versions(session: aiohttp.ClientSession, rest_url: str, model_name: str) -> dict[str, Any]:
    """{'answered': bool, 'available': [versions AVAILABLE, highest first], 'states': {version: state},
    'error': why it did not answer}."""
    url = f"{rest_url}/v1/models/{urllib.parse.quote(model_name, safe='')}"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as response:
            if response.status == 404:
                return {"answered": True, "url": url, "available": [], "states": {},
                        "error": f"the server does not know the model {model_name!r}"}
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        return {"answered": False, "url": url, "available": [], "states": {},
                "error": f"no answer from {rest_url} ({type(e).__name__})"}
    states = {str(item.get("version")): item.get("state", "") for item in body.get("model_version_status", [])
              if isinstance(item, dict)}
    available = sorted((v for v, s in states.items() if s == "AVAILABLE"), key=lambda v: -int(v) if v.isdigit()
                       else 0)
    return {"answered": True, "url": url, "available": available, "states": states, "error": None}
