"""`python -m api`: serve the API with uvicorn on the configured host/port."""

import uvicorn

from core.logs import setup_logging
from core.settings import get_settings


def main() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    uvicorn.run("api.main:create_app", factory=True, host=settings.api_host, port=settings.api_port,
                workers=settings.api_processes, log_level=settings.log_level.lower(), access_log=False)


if __name__ == "__main__":
    main()
