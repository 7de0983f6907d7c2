defmodule ScopeTest.Door do
  @moduledoc """
  A `:gen_statem` for tests: a door with a code, whose data counts wrong tries. It changes
  state (`:next_state`), keeps it with new data (`:keep_state`), keeps both
  (`:keep_state_and_data`), and can block in a state function until told to go on. (A script
  the tests load, not compiled into the application: ElixirScope refuses to trace its own
  application's modules.)
  """
  @behaviour :gen_statem
  def callback_mode, do: :state_functions
  def init(code), do: {:ok, :locked, %{code: code, tries: 0}}

  def locked({:call, from}, {:unlock, c}, %{code: c} = d),
    do: {:next_state, :open, %{d | tries: 0}, [{:reply, from, :ok}]}

  def locked({:call, from}, {:unlock, _}, d),
    do: {:keep_state, %{d | tries: d.tries + 1}, [{:reply, from, :error}]}

  def locked(:cast, {:wait, test}, d),
    do: send(test, :waiting) && receive(do: (:go_on -> {:keep_state, d}))

  def locked(:info, :noop, _d), do: :keep_state_and_data
  def open({:call, from}, :lock, d), do: {:next_state, :locked, d, [{:reply, from, :ok}]}
  def open({:call, from}, :peek, _d), do: {:keep_state_and_data, [{:reply, from, :open}]}
end
