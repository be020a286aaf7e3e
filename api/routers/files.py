from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import FileResponse

from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, LegacyCallerDep, RedisDep, SettingsDep, require_api_key, require_legacy_access
from api.errors import ApiError
from api.schemas.files import FileOut
from api.services.files import claim_file, owned_path
from api.uploads import save_audio_upload
from core.files import PUBLIC_KINDS

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", status_code=201, response_model=FileOut, dependencies=[Depends(require_api_key)], summary="Upload an audio file for later ASR or speech")
async def upload_file(settings: SettingsDep, redis: RedisDep, caller: CallerDep,
                      file: Annotated[UploadFile, File()]) -> FileOut:
    path, info = await save_audio_upload(settings, file)
    await run_in_threadpool(claim_file, settings, redis, caller, path)
    return FileOut(file=f"uploads/{path.name}", legacy_path=f"tests/{path.name}", url=f"/v1/files/uploads/{path.name}",
                   size_bytes=path.stat().st_size, duration_s=round(info.duration_s, 3))


# Downloads also take ?key= or an allowed address: players (<video src>, legacy clients) send no headers.
@router.get("/{kind}/{name}", summary="Download a result or uploaded file", dependencies=[Depends(require_legacy_access)],
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download_file(kind: str, name: str, settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep):
    if kind not in PUBLIC_KINDS:
        raise ApiError(404, "not_found", f"no file kind {kind!r}")
    path = await run_in_threadpool(lambda: owned_path(settings, f"{kind}/{name}", redis=redis, caller=caller))
    return FileResponse(path, filename=path.name)
