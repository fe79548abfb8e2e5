"""A server's cache of its clients' CUDA IPC mappings (spec 15.4 rule 4), bounded per client and in bytes."""

from __future__ import annotations

import collections

from ._cuda_memory import _Mapping, open_mapping

__all__ = ["_ClientMappings"]


_Key = tuple[tuple[int, int], int, bytes]  # (client, device, handle)


class _Cached:
    __slots__ = ("mapping", "size")

    def __init__(self, mapping: _Mapping) -> None:
        self.mapping, self.size = mapping, 0  # size: the bytes counted for it


class _ClientMappings:
    """A server's mappings of its clients' handles (spec 15.4 rule 4), by (client, device, handle).

    Bounded twice: at most ``per_client`` mappings of one client, and at most ``max_bytes`` of
    allocations open in all, every client's together (what the server keeps open is device memory
    that stays allocated after its client freed it). The least recently used go first, but never
    one that a request still in flight uses (``open`` marks it, ``release`` ends the mark): the
    request's client holds that memory until the answer anyway (rule 1), and its tensors read it.
    So a mapping larger than ``max_bytes`` is served and dropped once its request is answered.
    Dropping a mapping closes it once no tensor uses it (``_Mapping``'s finalizer).

    A mapping counts its allocation's size, or, where the driver could not tell it, the most bytes
    a request has read of it. A mapping two clients share (one handle sent by both) counts twice.
    """

    def __init__(self, per_client: int, max_bytes: int) -> None:
        self.per_client, self.max_bytes = per_client, max_bytes
        self.bytes = 0
        self._lru: collections.OrderedDict[_Key, _Cached] = collections.OrderedDict()
        self._of: dict[tuple[int, int], collections.OrderedDict[_Key, None]] = {}  # each client's, LRU first
        self._used: collections.Counter[_Key] = collections.Counter()  # by requests in flight
        self._by_channel: dict[int, list[_Key]] = {}

    def open(
        self, channel: int, client: tuple[int, int], device: int, handle: bytes, extent: int
    ) -> _Mapping:
        """The mapping of ``handle`` for the request on ``channel``, opened if not cached; marked
        in use until ``release(channel)``. ``extent``: the bytes of it the request reads (offset +
        size). A handle that does not open raises ``CudaError`` and changes nothing."""
        key = (client, device, handle)
        entry = self._lru.get(key)
        if entry is None:
            entry = self._lru[key] = _Cached(open_mapping(device, handle))
            self._of.setdefault(client, collections.OrderedDict())[key] = None
        else:
            self._lru.move_to_end(key)
            self._of[client].move_to_end(key)
        size = entry.mapping.size or max(extent, entry.size)
        self.bytes += size - entry.size
        entry.size = size
        self._used[key] += 1
        self._by_channel.setdefault(channel, []).append(key)
        self._trim(client)
        return entry.mapping

    def release(self, channel: int) -> None:
        """The request on ``channel`` is answered (or gone): its mappings may go, and those over the
        bounds go now."""
        keys = self._by_channel.pop(channel, None)
        if not keys:
            return
        for key in keys:
            self._used[key] -= 1
            if not self._used[key]:
                del self._used[key]
        self._trim(keys[0][0])

    def _trim(self, client: tuple[int, int]) -> None:
        mine = self._of.get(client)
        if mine is not None and len(mine) > self.per_client:
            over = len(mine) - self.per_client
            for key in [k for k in mine if k not in self._used][:over]:
                self._drop(key)
        if self.bytes > self.max_bytes:
            victims, freed = [], 0
            for key, entry in self._lru.items():  # least recently used first
                if key not in self._used:
                    victims.append(key)
                    freed += entry.size
                    if self.bytes - freed <= self.max_bytes:
                        break
            for key in victims:
                self._drop(key)

    def _drop(self, key: _Key) -> None:
        self.bytes -= self._lru.pop(key).size
        mine = self._of[key[0]]
        del mine[key]
        if not mine:
            del self._of[key[0]]

    def drop_client(self, client: tuple[int, int]) -> int:
        """Drop every mapping of ``client`` (its last channel went); how many there were."""
        keys = list(self._of.get(client, ()))
        for key in keys:
            self._drop(key)
        return len(keys)

    def held(self, channel: int) -> list[tuple[_Mapping, int]]:
        """The mappings the request on ``channel`` uses (marked by ``open``, not yet released),
        each with the bytes counted for it."""
        return [(self._lru[key].mapping, self._lru[key].size) for key in self._by_channel.get(channel, ())]

    def cached(self) -> set[int]:
        """The ``id`` of each mapping the cache holds."""
        return {id(entry.mapping) for entry in self._lru.values()}

    def __len__(self) -> int:
        return len(self._lru)

    def counts(self) -> dict[tuple[int, int], int]:
        """Mappings per client."""
        return {client: len(keys) for client, keys in self._of.items()}

    def clear(self) -> None:
        self._lru.clear()
        self._of.clear()
        self._used.clear()
        self._by_channel.clear()
        self.bytes = 0
