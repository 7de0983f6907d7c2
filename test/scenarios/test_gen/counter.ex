defmodule TestGenScenario.Counter do
  use GenServer
  def init(n), do: {:ok, %{count: n, history: []}}

  def handle_call({:add, k}, _from, s),
    do: {:reply, s.count + k, %{s | count: s.count + k, history: [k | s.history]}}

  def handle_call(:get, _from, s), do: {:reply, s.count, s}
  def handle_cast(:reset, s), do: {:noreply, %{s | count: 0}}
  def handle_info({:tick, k}, s), do: {:noreply, %{s | count: s.count + k}}
end
