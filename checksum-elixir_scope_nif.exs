# SHA-256 of each precompiled NIF artifact of this version, by file name: written by
# `mix elixir_scope.precompile` when the artifacts are built for a release. Empty in the
# repository: a source checkout builds its NIF with cargo.
%{}
