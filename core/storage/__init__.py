"""The scalar store: SQLModel tables, the row format of an entry, and the SQL store behind them."""

from .models import EntryRow, LogRow, MetaRow, PartitionRow
from .sql import SQLStore

__all__ = ["EntryRow", "LogRow", "MetaRow", "PartitionRow", "SQLStore"]
