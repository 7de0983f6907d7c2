defmodule ElixirScope.MixProject do
  use Mix.Project

  @version "0.1.0"
  @source_url "https://github.com/elixir-scope/elixir_scope"

  def project do
    [
      app: :elixir_scope,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      # The native compiler runs after Elixir's, so its own module is compiled by then; see
      # Mix.Tasks.Compile.ElixirScopeNative for how the NIF is (re)loaded.
      compilers: Mix.compilers() ++ [:elixir_scope_native],
      deps: [],
      elixirc_paths: elixirc_paths(Mix.env()),
      description: description(),
      package: package(),
      source_url: @source_url,
      docs: [main: "readme", extras: ["README.md"]],
      test_coverage: [summary: [threshold: 0]],
      # The native compiler (a Mix task, at build time only) fetches precompiled libraries.
      xref: [exclude: [:crypto, :httpc, :erl_tar, :public_key]]
    ]
  end

  def application do
    [
      extra_applications: [:logger, :runtime_tools, :inets, :crypto],
      mod: {ElixirScope.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  defp description do
    "Runtime introspection and time-travel debugging for Elixir/BEAM: an erl_tracer NIF captures " <>
      "process, message and call events into a bounded lock-free Rust store you query from IEx."
  end

  defp package do
    [
      name: "elixir_scope",
      licenses: ["Apache-2.0"],
      links: %{"GitHub" => @source_url},
      files: ~w(
        lib mix.exs README.md LICENSE Cargo.toml Cargo.lock checksum-elixir_scope_nif.exs
        native/elixir_scope_core/Cargo.toml native/elixir_scope_core/src
        native/elixir_scope_nif/Cargo.toml native/elixir_scope_nif/src
        priv/static assets/src assets/index.html assets/package.json assets/package-lock.json
      )
    ]
  end
end
