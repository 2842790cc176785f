"""The money path: stock pools in Redis Lua, holds, settlement into SQL."""
