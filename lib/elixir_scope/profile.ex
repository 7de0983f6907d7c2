defmodule ElixirScope.Profile do
  @moduledoc """
  Named sets of `ElixirScope.start/1` options: `ElixirScope.start(profile: name, overrides...)`
  starts with the profile's options, the overrides taking precedence, and `status/0` names the
  profile.

  Built in:

    * `:lightweight_production` - safe to leave on: every process at `:states_only` (states,
      supervisors, exits), a tenth of the processes sampled, a 200,000-event store, a hard cap
      of 20,000 events a second that falls back to `:minimal`, load-aware thinning, and process
      metrics every 5 s.
    * `:deep_dive_dev` - everything, on every process: `:full` level, no sampling, a
      2,000,000-event store, 16 KiB payloads, metrics every second.
    * `:phoenix_focus` - the processes of a Phoenix app's live parts, by their modules:
      processes running `Phoenix.LiveView.Channel` (one per LiveView) or
      `Phoenix.Channel.Server` (one per channel), as they appear, and the calls of every
      loaded LiveView and channel module (modules exporting `__live__/0` or
      `__intercepts__/0`), at the `:full` level, with a hard cap of 50,000 events a second
      falling back to `:messages_only`.

    * `:flight_recorder` - every process at the `:full` level, capped at 50,000 events a
      second (falling back to `:states_only`) and load-aware, in a store of 200,000 events
      and 64 MiB of payloads: what `ElixirScope.flight_recorder/2` starts, as a ring in
      memory (or a trace on disk under retention), with a dump on every crash.

  User-defined profiles live in the application's config, as keyword lists of start options:

      config :elixir_scope, profiles: [
        checkout: [trace: [MyApp.Checkout], tracing_level: :full, max_time: 600_000]
      ]

  A user-defined profile may take a built-in one's name to replace it.
  """

  @builtin [
    lightweight_production: [
      tracing_level: :states_only,
      sample_rate: 0.1,
      max_events: 200_000,
      max_bytes: 64 * 1024 * 1024,
      trace: [:all],
      max_rate: {20_000, 1_000},
      on_limit: {:level, :minimal},
      load: [],
      metrics: 5_000
    ],
    deep_dive_dev: [
      tracing_level: :full,
      sample_rate: 1.0,
      max_events: 2_000_000,
      max_payload_bytes: 16_384,
      trace: [:all],
      metrics: 1_000
    ],
    flight_recorder: [
      tracing_level: :full,
      trace: [:all],
      max_events: 200_000,
      max_bytes: 64 * 1024 * 1024,
      max_rate: {50_000, 1_000},
      on_limit: {:level, :states_only},
      load: []
    ],
    phoenix_focus: [
      tracing_level: :full,
      trace: [
        {:processes_running, [Phoenix.LiveView.Channel, Phoenix.Channel.Server]},
        {:modules_exporting, [__live__: 0, __intercepts__: 0]}
      ],
      max_rate: {50_000, 1_000},
      on_limit: {:level, :messages_only}
    ]
  ]

  @doc """
  The profiles there are: built-in ones and those in the config.

  ## Examples

      iex> Keyword.keys(ElixirScope.Profile.all()) -- [:lightweight_production, :deep_dive_dev, :flight_recorder, :phoenix_focus]
      []
  """
  @spec all() :: keyword(keyword())
  def all do
    user =
      case Application.get_env(:elixir_scope, :profiles, []) do
        list when is_list(list) -> list
        map when is_map(map) -> Map.to_list(map)
        other -> ElixirScope.Args.bad!("config :elixir_scope, :profiles", other, "a keyword list")
      end

    Keyword.merge(@builtin, user)
  end

  @doc """
  The start options of profile `name` with `overrides` applied.

  ## Examples

      iex> opts = ElixirScope.Profile.options!(:deep_dive_dev, sample_rate: 0.5)
      iex> {opts[:tracing_level], opts[:sample_rate]}
      {:full, 0.5}
      iex> ElixirScope.Profile.options!(:nope, [])
      ** (ArgumentError) unknown profile :nope (profiles: :lightweight_production, :deep_dive_dev, :flight_recorder, :phoenix_focus)
  """
  @spec options!(atom(), keyword()) :: keyword()
  def options!(name, overrides) do
    profiles = all()

    case Keyword.fetch(profiles, name) do
      {:ok, opts} when is_list(opts) ->
        Keyword.merge(opts, overrides)

      {:ok, other} ->
        ElixirScope.Args.bad!(
          "profile #{inspect(name)}",
          other,
          "a keyword list of start options"
        )

      :error ->
        raise ArgumentError,
              "unknown profile #{inspect(name)} (profiles: " <>
                Enum.map_join(Keyword.keys(profiles), ", ", &inspect/1) <> ")"
    end
  end
end
