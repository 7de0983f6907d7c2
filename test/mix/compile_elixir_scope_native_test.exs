defmodule Mix.Tasks.Compile.ElixirScopeNativeTest do
  use ExUnit.Case, async: false

  alias Mix.Tasks.Compile.ElixirScopeNative

  test "does nothing when the library is newer than every Rust source" do
    # The suite's own compile just built it.
    assert ElixirScopeNative.run([]) == {:noop, []}
  end

  test "without cargo it fails with a message saying how to get it" do
    home = Path.join(System.tmp_dir!(), "es_no_cargo_#{System.unique_integer([:positive])}")
    File.mkdir_p!(home)
    saved = for k <- ["PATH", "HOME"], do: {k, System.get_env(k)}

    try do
      System.put_env("PATH", "/nonexistent")
      System.put_env("HOME", home)
      assert ElixirScopeNative.find_cargo() == nil

      error = assert_raise Mix.Error, fn -> ElixirScopeNative.run(["--force"]) end
      assert error.message =~ "ElixirScope needs Rust's cargo to build its native library"
      assert error.message =~ "rustup"
    after
      Enum.each(saved, fn {k, v} -> if v, do: System.put_env(k, v), else: System.delete_env(k) end)

      File.rm_rf!(home)
    end

    assert is_binary(ElixirScopeNative.find_cargo())
  end

  @tag timeout: 300_000
  test "an app using Track compiles and runs in :prod without Rust" do
    app = Path.join(System.tmp_dir!(), "es_prod_app_#{System.unique_integer([:positive])}")
    home = Path.join(app, "home")
    File.mkdir_p!(Path.join(app, "lib"))
    File.mkdir_p!(home)
    root = Path.expand("../..", __DIR__)

    File.write!(Path.join(app, "mix.exs"), """
    defmodule ProdApp.MixProject do
      use Mix.Project
      def project, do: [app: :prod_app, version: "0.1.0", deps: [{:elixir_scope, path: #{inspect(root)}}]]
      def application, do: [extra_applications: [:logger]]
    end
    """)

    File.write!(Path.join(app, "lib/prod_app.ex"), """
    defmodule ProdApp do
      use ElixirScope.Track
      @scope true
      def double(x) do
        y = x * 2
        y
      end
    end
    """)

    # No cargo anywhere: not on the PATH, not under HOME.
    env = [
      {"PATH", "/usr/local/bin:/usr/bin:/bin"},
      {"HOME", home},
      {"MIX_ENV", "prod"},
      {"MIX_HOME", Path.join(home, ".mix")}
    ]

    try do
      {out, status} = System.cmd("mix", ["compile"], cd: app, env: env, stderr_to_stdout: true)
      assert status == 0, out
      assert out =~ "no cargo found, the native library is not built"

      {out, status} =
        System.cmd("mix", ["run", "-e", "IO.puts(ProdApp.double(21))"],
          cd: app,
          env: env,
          stderr_to_stdout: true
        )

      assert status == 0, out
      assert out =~ "42"
    after
      File.rm_rf!(app)
    end
  end
end
