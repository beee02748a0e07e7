"""The seven TechEmpower tests on FastAPI written as its tutorial teaches: SQLAlchemy 2 async ORM.

v1 draft.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from operator import attrgetter
from pathlib import Path
from random import randint, sample
from typing import Annotated, Any

import target_kit
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

WORLD_ROWS = 10_000
MAX_QUERIES = 500
POOL_CAP = 16


class Base(DeclarativeBase):
    pass


class World(Base):
    __tablename__ = "world"

    id: Mapped[int] = mapped_column(primary_key=True)
    randomnumber: Mapped[int]


class Fortune(Base):
    __tablename__ = "fortune"

    id: Mapped[int] = mapped_column(primary_key=True)
    message: Mapped[str]


class WorldOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    randomNumber: int = Field(validation_alias="randomnumber")  # noqa: N815 (the contract's key)


class Message(BaseModel):
    message: str


engine = create_async_engine(
    target_kit.database_url().replace("postgresql://", "postgresql+asyncpg://", 1),
    pool_size=target_kit.pool_size(target_kit.workers(), POOL_CAP),
    max_overflow=0,
    pool_pre_ping=True,
    connect_args={"timeout": 1, "command_timeout": 1},
)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))


async def get_session() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def clamp(raw: str | None) -> int:
    try:
        n = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1
    return min(max(n, 1), MAX_QUERIES)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    target_kit.die_with_master(target_kit.master_pid())
    app.state.info = target_kit.Info(target_kit.workers())
    app.state.world_cache = {}
    try:
        async with SessionLocal() as session:
            app.state.world_cache = {w.id: WorldOut.model_validate(w) for w in await session.scalars(select(World))}
    except (SQLAlchemyError, OSError):
        pass
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.exception_handler(SQLAlchemyError)
@app.exception_handler(OSError)
async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": "database unavailable"}, status_code=503)


@app.get("/json")
async def json_serialization() -> Message:
    return Message(message="Hello, World!")


@app.get("/plaintext")
async def plaintext() -> Response:
    return Response(b"Hello, World!", headers={"content-type": "text/plain"})


@app.get("/db")
async def single_query(session: SessionDep) -> WorldOut:
    return await session.get(World, randint(1, WORLD_ROWS))  # type: ignore[return-value]


@app.get("/queries")
async def multiple_queries(session: SessionDep, queries: str | None = None) -> list[WorldOut]:
    return [await session.get(World, i) for i in sample(range(1, WORLD_ROWS + 1), clamp(queries))]  # type: ignore[misc]


@app.get("/fortunes", response_class=HTMLResponse)
async def fortunes(request: Request, session: SessionDep) -> HTMLResponse:
    rows = list(await session.scalars(select(Fortune)))
    rows.append(Fortune(id=0, message="Additional fortune added at request time."))
    rows.sort(key=attrgetter("message"))
    return templates.TemplateResponse(request, "idiomatic_fortunes.html", {"fortunes": rows})


@app.get("/updates")
async def updates(session: SessionDep, queries: str | None = None) -> list[WorldOut]:
    worlds = [await session.get(World, i) for i in sample(range(1, WORLD_ROWS + 1), clamp(queries))]
    for world in worlds:
        world.randomnumber = randint(1, WORLD_ROWS)  # type: ignore[union-attr]
    await session.commit()
    return worlds  # type: ignore[return-value]


@app.get("/cached-queries")
async def cached_queries(request: Request, session: SessionDep, count: str | None = None) -> list[WorldOut]:
    cache: dict[int, WorldOut] = request.app.state.world_cache
    ids = sample(range(1, WORLD_ROWS + 1), clamp(count))
    for i in ids:
        if i not in cache:
            cache[i] = WorldOut.model_validate(await session.get(World, i))
    return [cache[i] for i in ids]


@app.get("/benchlab/info")
async def benchlab_info(request: Request) -> dict[str, Any]:
    return request.app.state.info.payload()
