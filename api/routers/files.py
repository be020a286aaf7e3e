from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, LegacyCallerDep, RedisDep, SettingsDep, require_api_key, require_legacy_access
from api.schemas.files import FileOut
from api.services.files import download_path
from api.uploads import save_audio_upload, save_owned

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", status_code=201, response_model=FileOut, dependencies=[Depends(require_api_key)], summary="Upload an audio file for later ASR or speech")
async def upload_file(settings: SettingsDep, redis: RedisDep, caller: CallerDep,
                      file: Annotated[UploadFile, File()]) -> FileOut:
    _ref, path, info = await save_owned(settings, file, save_audio_upload, redis=redis, caller=caller)
    return FileOut(file=f"uploads/{path.name}", legacy_path=f"tests/{path.name}", url=f"/v1/files/uploads/{path.name}",
                   size_bytes=path.stat().st_size, duration_s=round(info.duration_s, 3))


# Downloads also take ?key= or an allowed address: players (<video src>, legacy clients) send no headers.
@router.get("/{kind}/{name}", summary="Download a result or uploaded file", dependencies=[Depends(require_legacy_access)],
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download_file(kind: str, name: str, settings: SettingsDep, redis: RedisDep, caller: LegacyCallerDep):
    path = await run_in_threadpool(lambda: download_path(settings, kind, name, redis=redis, caller=caller))
    return FileResponse(path, filename=path.name)
