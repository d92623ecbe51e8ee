"""Old path of `osneural.encoders` (encoders are shared by ingest, plugin and eval)."""

from osneural._moved import alias_package

alias_package(__name__, "osneural.encoders")
