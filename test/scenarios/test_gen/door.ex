defmodule TestGenScenario.Door do
  @behaviour :gen_statem
  def callback_mode, do: :handle_event_function
  def init(code), do: {:ok, :locked, %{code: code, tries: 0}}

  def handle_event({:call, from}, {:unlock, code}, :locked, %{code: code} = d),
    do: {:next_state, :open, %{d | tries: 0}, [{:reply, from, :opened}]}

  def handle_event({:call, from}, {:unlock, _}, :locked, d),
    do: {:keep_state, %{d | tries: d.tries + 1}, [{:reply, from, :wrong}]}

  def handle_event({:call, from}, :lock, :open, d),
    do: {:next_state, :locked, d, [{:reply, from, :locked}]}

  def handle_event(:cast, :knock, state, d), do: {:next_state, state, d}
end
