"""Request and response models."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Money(BaseModel):
    amount_cents: int
    currency: str = "EUR"
    display: str


class Tag(BaseModel):
    slug: str
    label: str


class Variant(BaseModel):
    sku: str
    option: str
    price: Money
    in_stock: bool


class Inventory(BaseModel):
    stock: int
    status: str
    weight_grams: int


class Product(BaseModel):
    id: int
    sku: str
    name: str
    category: str
    description: str
    price: Money
    inventory: Inventory
    tags: list[Tag]
    variants: list[Variant]


class ProductPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[Product]


class Recommendation(BaseModel):
    product_id: int
    name: str
    score: float


class Recommendations(BaseModel):
    product_id: int
    items: list[Recommendation]


class Customer(BaseModel):
    id: int
    name: str
    email: str
    zone: str


class OrderItem(BaseModel):
    product_id: int
    product_name: str
    quantity: int
    unit_price_cents: int


class Order(BaseModel):
    id: int
    created_at: str
    status: str
    customer: Customer
    items: list[OrderItem]
    total_cents: int


class OrderLineIn(BaseModel):
    product_id: int
    quantity: int = Field(ge=1, le=100)


class OrderIn(BaseModel):
    customer_id: int
    items: list[OrderLineIn] = Field(min_length=1, max_length=50)


class LoginIn(BaseModel):
    email: str
    password: str


class LoginOut(BaseModel):
    customer_id: int
    token: str


class ReserveIn(BaseModel):
    quantity: int = Field(default=1, ge=1, le=100)


class Reservation(BaseModel):
    sku: str
    reserved: int
    remaining: int


class Rate(BaseModel):
    zone: str
    carrier: str
    rate_cents: int
    estimated_days: int


class Shipping(BaseModel):
    product_id: int
    weight_grams: int
    zone: str
    carrier: str
    rate_cents: int
    estimated_days: int


class CacheStats(BaseModel):
    render_cache_entries: int
    render_cache_bytes: int
