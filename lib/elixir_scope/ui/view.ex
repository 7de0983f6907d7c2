defmodule ElixirScope.UI.View do
  @moduledoc """
  How the UI's API writes ElixirScope's values as JSON-ready maps: terms as `inspect/2` prints
  them (with limits, so one huge term cannot flood a page), pids as `#PID<0.1.0>`, times both
  as the capture's monotonic nanoseconds and as UTC wall-clock time.

  ## Examples

      iex> ElixirScope.UI.View.term({:ok, Enum.to_list(1..3)})
      "{:ok, [1, 2, 3]}"

      iex> ElixirScope.UI.View.parse_pid("#PID<0.0.0>") == {:ok, :erlang.list_to_pid(~c"<0.0.0>")}
      true

      iex> ElixirScope.UI.View.parse_pid("<0.1>")
      :error

      iex> ElixirScope.UI.View.parse_pid("#PID<777.1.2>")   # a node this VM does not know
      :error
  """

  alias ElixirScope.{Event, Store}

  # Enough to read a state or a message whole in most cases; the rest is cut with "...".
  @inspect [limit: 100, printable_limit: 4096, pretty: true, width: 96]

  @doc "`term` as `inspect/2` prints it, pretty, with limits."
  @spec term(term()) :: String.t()
  def term(term), do: inspect(term, @inspect)

  @doc "A pid (or any other process identifier) as text; `nil` stays `nil`."
  @spec pid(term()) :: String.t() | nil
  def pid(nil), do: nil
  def pid(other), do: inspect(other)

  @doc """
  The pid `text` names (`#PID<0.12.0>` or `<0.12.0>`; a pid of another node, as a saved trace's
  pids print, when this node knows it), without making atoms; `:error` for anything else.
  """
  @spec parse_pid(String.t()) :: {:ok, pid()} | :error
  def parse_pid(text) when is_binary(text) do
    text = String.replace_prefix(text, "#PID", "")

    # (A pid of another node, a saved trace's, is read too: its first number is that node's
    # index on this one, and a number no node has is refused.)
    with true <- byte_size(text) <= 64,
         [_, _, _, _] <- Regex.run(~r/\A<(\d{1,10})\.(\d{1,10})\.(\d{1,10})>\z/, text) do
      try do
        {:ok, :erlang.list_to_pid(String.to_charlist(text))}
      rescue
        ArgumentError -> :error
      end
    else
      _ -> :error
    end
  end

  def parse_pid(_), do: :error

  @doc """
  The existing atom `text` names, without making one: a registered name or a module, an
  Elixir-style name (`MyApp.Cache`) tried as the module first; `nil` when none exists.

  ## Examples

      iex> ElixirScope.UI.View.existing_atom("Enum")
      Enum

      iex> ElixirScope.UI.View.existing_atom("surely_no_such_atom_here_0")
      nil
  """
  @spec existing_atom(String.t()) :: atom() | nil
  def existing_atom(text) when is_binary(text) do
    candidates = if text =~ ~r/\A[A-Z]/, do: ["Elixir." <> text, text], else: [text]

    Enum.find_value(candidates, fn c ->
      try do
        String.to_existing_atom(c)
      rescue
        ArgumentError -> nil
      end
    end)
  end

  @doc """
  An event as the UI shows it: its fields, a one-line `summary` (as `ElixirScope.Event.describe/2`
  says it) and its `data` printed whole (within limits); `names` maps pids to registered names.
  """
  @spec event(Event.t(), Store.t() | nil, %{pid() => atom()}) :: map()
  def event(%Event{} = e, store, names) do
    %{
      seq: e.seq,
      ts: e.ts,
      time: time(store, e.ts),
      kind: e.kind,
      pid: pid(e.pid),
      name: name(names, e.pid),
      peer: pid(e.peer),
      peer_name: name(names, e.peer),
      mfa: mfa(e.mfa),
      summary: Event.describe(e, limit: 8),
      data: term(e.data)
    }
  end

  @doc "Events as `event/3` writes them."
  @spec events([Event.t()], Store.t() | nil, %{pid() => atom()}) :: [map()]
  def events(events, store, names), do: Enum.map(events, &event(&1, store, names))

  @doc "An MFA as `Mod.fun/arity`; `nil` stays `nil`."
  @spec mfa(mfa() | nil) :: String.t() | nil
  def mfa({m, f, a}) when is_atom(m) and is_atom(f) and is_integer(a),
    do: Exception.format_mfa(m, f, a)

  def mfa(_), do: nil

  @doc "A monotonic time of `store`'s capture as ISO 8601 UTC text (nil without a store)."
  @spec time(Store.t() | nil, integer()) :: String.t() | nil
  def time(%Store{} = store, ts) when is_integer(ts),
    do: store |> Store.to_datetime(ts) |> DateTime.to_iso8601()

  def time(_, _), do: nil

  defp name(names, pid) do
    case Map.get(names, pid) do
      nil -> nil
      name -> inspect(name)
    end
  end
end
