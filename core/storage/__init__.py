"""The scalar store: SQLModel tables and the SQL store behind them."""

from .models import EntryRow, LogRow, MetaRow, PartitionRow
from .sql import SQLStore

__all__ = ["EntryRow", "LogRow", "MetaRow", "PartitionRow", "SQLStore"]
