"""A FastAPI app on a real PostgreSQL server (PG_DSN, postgresql://...): the same list
of 8 items with their owners through four drivers. Each /items route loads every item's
owner with a statement of its own (an N+1 planted on purpose); /sync/items/batched loads
them with one IN query.

- /sync/...: SQLAlchemy's sync engine on psycopg 3
- /async/items: SQLAlchemy's async engine on psycopg 3 (AsyncCursor)
- /sa-asyncpg/items: SQLAlchemy's async engine on asyncpg (prepared statements)
- /asyncpg/items: asyncpg directly
- /psycopg/count: psycopg's AsyncConnection directly, one statement"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import psycopg
from fastapi import FastAPI
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

ITEMS = 8
DSN = os.environ["PG_DSN"]                         # postgresql://user@host:port/db
URL = DSN.replace("postgresql://", "postgresql+psycopg://", 1)


class Base(DeclarativeBase):
    pass


class Owner(Base):
    __tablename__ = "owner"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(40))
    owner_id: Mapped[int] = mapped_column(ForeignKey("owner.id"))


engine = create_engine(URL)
async_engine = create_async_engine(URL)
asyncpg_engine = create_async_engine(DSN.replace("postgresql://", "postgresql+asyncpg://", 1))
pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global pool
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for i in range(ITEMS):
            owner = Owner(name=f"owner {i}")
            session.add(owner)
            session.flush()
            session.add(Item(title=f"item {i}", owner_id=owner.id))
        session.commit()
    pool = await asyncpg.create_pool(DSN, min_size=1, max_size=2)
    yield
    await pool.close()
    await async_engine.dispose()
    await asyncpg_engine.dispose()
    engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
def health() -> dict[str, str]:
    return {"ok": "yes"}


@app.get("/sync/items")
def sync_items() -> list[dict[str, str]]:
    with Session(engine) as session:
        out = []
        for item in session.scalars(select(Item).order_by(Item.id)).all():
            owner = session.get(Owner, item.owner_id)
            out.append({"title": item.title, "owner": owner.name if owner else ""})
        return out


@app.get("/sync/items/batched")
def sync_items_batched() -> list[dict[str, str]]:
    with Session(engine) as session:
        rows = session.scalars(select(Item).order_by(Item.id)).all()
        owners = {o.id: o for o in session.scalars(
            select(Owner).where(Owner.id.in_([i.owner_id for i in rows])))}
        return [{"title": i.title, "owner": owners[i.owner_id].name} for i in rows]


async def orm_items(session: AsyncSession) -> list[dict[str, str]]:
    out = []
    for item in (await session.scalars(select(Item).order_by(Item.id))).all():
        owner = await session.get(Owner, item.owner_id)
        out.append({"title": item.title, "owner": owner.name if owner else ""})
    return out


@app.get("/async/items")
async def async_items() -> list[dict[str, str]]:
    async with AsyncSession(async_engine) as session:
        return await orm_items(session)


@app.get("/sa-asyncpg/items")
async def sa_asyncpg_items() -> list[dict[str, str]]:
    async with AsyncSession(asyncpg_engine) as session:
        return await orm_items(session)


@app.get("/asyncpg/items")
async def asyncpg_items() -> list[dict[str, str]]:
    assert pool is not None
    async with pool.acquire() as conn:
        out = []
        for row in await conn.fetch("SELECT id, title, owner_id FROM item ORDER BY id"):
            name = await conn.fetchval("SELECT name FROM owner WHERE id = $1", row["owner_id"])
            out.append({"title": row["title"], "owner": name})
        return out


@app.get("/psycopg/count")
async def psycopg_count() -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        cur = await conn.execute("SELECT count(*) FROM item WHERE title LIKE 'item%'")
        row = await cur.fetchone()
        return {"items": row[0] if row else 0}
