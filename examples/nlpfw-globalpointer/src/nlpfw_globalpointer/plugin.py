"""The entry point nlpfw loads (group `nlpfw`): registers `global_pointer.v1`."""

from __future__ import annotations

from nlpfw.hookspecs import hookimpl

from nlpfw_globalpointer.decoder import GlobalPointerDecoder


@hookimpl
def register_decoders(register):
    register("global_pointer.v1", GlobalPointerDecoder)
