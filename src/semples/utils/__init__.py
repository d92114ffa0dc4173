"""Small utilities every room of the package may import (no other `semples` imports in here)."""
