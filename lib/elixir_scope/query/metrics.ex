defmodule ElixirScope.Query.Metrics do
  @moduledoc """
  Questions about the process metrics a capture samples (`ElixirScope.start(metrics: ms)`, see
  `ElixirScope.Governor`): `:metrics` events of each sampled process, `{message_queue_len,
  reductions, memory}` at each interval.

      iex> store = ElixirScope.Store.new!()
      iex> ElixirScope.Query.Metrics.mailbox_at(self(), :now, store: store)
      {:error, :no_sample}

  Processes are given as pids or registered names; windows with `since:`/`until:` (monotonic
  ns or `DateTime`), and `store:` picks the store, as for `ElixirScope.Query.events/1`.
  """

  alias ElixirScope.{Args, Query}
  alias ElixirScope.Query.Names

  @typedoc "One sample."
  @type sample :: %{
          seq: pos_integer(),
          ts: integer(),
          pid: pid(),
          mailbox: non_neg_integer(),
          reductions: non_neg_integer(),
          memory: non_neg_integer()
        }

  @doc "The samples of a process, oldest first (filters as for `ElixirScope.Query.events/1`)."
  @spec samples(pid() | atom(), keyword()) :: [sample()]
  def samples(target, filters \\ []) do
    filters = Args.opts!(filters)
    pid = resolve(target, filters)

    Query.events(Keyword.merge(filters, kind: :metrics, pid: pid))
    |> Enum.flat_map(&sample/1)
  end

  @doc """
  The mailbox length of a process at `t` (monotonic ns, a `DateTime` or `:now`): its last
  sample at or before `t`, with when it was taken. `{:error, :no_sample}` when none was.
  """
  @spec mailbox_at(pid() | atom(), integer() | DateTime.t() | :now, keyword()) ::
          {:ok, sample()} | {:error, :no_sample}
  def mailbox_at(target, t, opts \\ []) do
    opts = Args.opts!(opts)
    pid = resolve(target, opts)
    until = if t == :now, do: [], else: [until: t]

    case Query.events(opts ++ until ++ [kind: :metrics, pid: pid, order: :desc, limit: 1])
         |> Enum.flat_map(&sample/1) do
      [s] -> {:ok, s}
      [] -> {:error, :no_sample}
    end
  end

  @doc """
  The processes whose mailboxes grew most over a window: for each sampled process, its last
  sample's mailbox length minus its first's, largest growth first. Options: the window and
  `store:` as for `ElixirScope.Query.events/1`, `limit:` (default 10). Processes sampled once
  in the window have no growth and are left out. Every sample of the window is read: give a
  window on a long capture.
  """
  @spec top_mailbox_growth(keyword()) :: [
          %{pid: pid(), growth: integer(), from: sample(), to: sample()}
        ]
  def top_mailbox_growth(opts \\ []) do
    {limit, filters} = Keyword.pop(Args.opts!(opts), :limit, 10)

    unless is_integer(limit) and limit > 0,
      do: Args.bad!(:limit, limit, "a positive integer")

    Query.events(filters ++ [kind: :metrics])
    |> Enum.flat_map(&sample/1)
    |> Enum.group_by(& &1.pid)
    |> Enum.flat_map(fn
      {_pid, [_]} ->
        []

      {pid, [first | _] = all} ->
        [
          %{
            pid: pid,
            from: first,
            to: List.last(all),
            growth: List.last(all).mailbox - first.mailbox
          }
        ]
    end)
    |> Enum.sort_by(&{-&1.growth, &1.to.seq})
    |> Enum.take(limit)
  end

  defp sample(%{kind: :metrics, data: {q, r, m}} = e),
    do: [%{seq: e.seq, ts: e.ts, pid: e.pid, mailbox: q, reductions: r, memory: m}]

  defp sample(_), do: []

  defp resolve(target, filters) do
    Names.resolve!(target, fn -> Query.store!(Keyword.get(filters, :store)) end, "process")
  end
end
