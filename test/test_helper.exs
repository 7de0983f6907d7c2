# Modules that tests raise or format are loaded up front, so that lazy code loading does not add
# code_server messages to the exact event sequences the tests expect.
Enum.each(
  [ArgumentError, RuntimeError, Exception, String.Chars, String.Chars.Integer],
  &Code.ensure_loaded!/1
)

ExUnit.start()
