"""A SQLModel app on a SQLite file: GET /items loads each item's owner on its own (an N+1
planted on purpose), GET /items/batched loads them all with one IN query; GET /async/items
is /items on SQLAlchemy's async engine (aiosqlite, whose worker thread runs each
statement)."""

from __future__ import annotations

import os

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlmodel import Field, Session, SQLModel, create_engine, select

ITEMS = 8


class Owner(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str


class Item(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    title: str
    owner_id: int = Field(foreign_key="owner.id")


engine = create_engine(f"sqlite:///{os.environ.get('ITEMS_DB', 'items.db')}")
async_engine = create_async_engine(f"sqlite+aiosqlite:///{os.environ.get('ITEMS_DB', 'items.db')}")
app = FastAPI()


@app.on_event("startup")
def seed() -> None:
    SQLModel.metadata.drop_all(engine)
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        for i in range(ITEMS):
            owner = Owner(name=f"owner {i}")
            session.add(owner)
            session.flush()
            session.add(Item(title=f"item {i}", owner_id=owner.id))
        session.commit()


@app.get("/health")
def health() -> dict[str, str]:
    return {"ok": "yes"}


@app.get("/items")
def items() -> list[dict[str, str]]:
    with Session(engine) as session:
        out = []
        for item in session.exec(select(Item)).all():
            owner = session.get(Owner, item.owner_id)
            out.append({"title": item.title, "owner": owner.name if owner else ""})
        return out


@app.get("/items/batched")
def items_batched() -> list[dict[str, str]]:
    with Session(engine) as session:
        rows = session.exec(select(Item)).all()
        owners = {o.id: o for o in session.exec(
            select(Owner).where(Owner.id.in_([i.owner_id for i in rows])))}  # type: ignore
        return [{"title": i.title, "owner": owners[i.owner_id].name} for i in rows]


@app.get("/async/items")
async def async_items() -> list[dict[str, str]]:
    async with AsyncSession(async_engine) as session:
        out = []
        for item in (await session.execute(select(Item))).scalars().all():
            owner = await session.get(Owner, item.owner_id)
            out.append({"title": item.title, "owner": owner.name if owner else ""})
        return out
