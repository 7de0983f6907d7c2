defmodule TestGenScenario.Bank do
  use GenServer
  def init(balance), do: {:ok, %{balance: balance, entries: []}}

  def handle_call({:withdraw, n}, _from, %{balance: b}) when n > b,
    do: raise(ArgumentError, "overdraft: #{n} over #{b}")

  def handle_call({:withdraw, n}, _from, s),
    do:
      {:reply, {:ok, s.balance - n},
       %{s | balance: s.balance - n, entries: [{:withdraw, n} | s.entries]}}

  def handle_call({:deposit, n}, _from, s),
    do:
      {:reply, {:ok, s.balance + n},
       %{s | balance: s.balance + n, entries: [{:deposit, n} | s.entries]}}
end
