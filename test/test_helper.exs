# Modules that tests raise or format are loaded up front, so that lazy code loading does not add
# code_server messages to the exact event sequences the tests expect.
Enum.each(
  [ArgumentError, RuntimeError, Exception, String.Chars, String.Chars.Integer],
  &Code.ensure_loaded!/1
)

# Test processes' modules that ElixirScope must trace: not compiled into the application (whose
# modules it refuses to trace).
Code.require_file("support/door.exs", __DIR__)

ExUnit.start()
