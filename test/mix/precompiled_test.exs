defmodule ElixirScope.PrecompiledTest do
  # Precompiled NIFs end to end: artifacts built by `mix elixir_scope.precompile`, served by an
  # HTTP server on 127.0.0.1, fetched and checked by the native compiler.
  use ExUnit.Case, async: false

  import ElixirScope.ScopeCase, only: [temp_path: 1]
  alias Mix.Tasks.Compile.ElixirScopeNative

  setup do
    served = temp_path("es_artifacts")
    sums_dir = temp_path("es_root")
    File.mkdir_p!(sums_dir)
    sums = Path.join(sums_dir, "checksum-elixir_scope_nif.exs")

    {:ok, artifact, sha} =
      Mix.Tasks.ElixirScope.Precompile.run(["--out", served, "--checksums", sums])

    System.delete_env("ELIXIR_SCOPE_BUILD")

    {:ok, _} = Application.ensure_all_started(:inets)

    {:ok, httpd} =
      :inets.start(:httpd,
        port: 0,
        bind_address: {127, 0, 0, 1},
        server_name: ~c"es_artifacts",
        server_root: String.to_charlist(served),
        document_root: String.to_charlist(served)
      )

    port = :httpd.info(httpd)[:port]
    on_exit(fn -> :inets.stop(:httpd, httpd) end)

    %{
      url: "http://127.0.0.1:#{port}",
      artifact: artifact,
      sha: sha,
      sums: sums,
      root: sums_dir,
      dest: temp_path("es_priv")
    }
  end

  test "a good artifact is installed, and loads", c do
    {checksums, _} = Code.eval_file(c.sums)
    assert checksums[ElixirScopeNative.artifact_name()] == c.sha

    lib = Path.join(c.dest, "elixir_scope_nif.so")
    assert :ok = ElixirScopeNative.fetch_precompiled(c.url, c.sums, c.dest, lib)

    built = Path.join([Mix.Project.app_path(), "priv", "native", "elixir_scope_nif.so"])
    assert File.read!(lib) == File.read!(built)

    # Loaded by a VM of its own, from an application directory holding it.
    app = Path.join(temp_path("es_app"), "elixir_scope")
    File.mkdir_p!(Path.join(app, "priv/native"))
    File.cp_r!(Path.join(Mix.Project.app_path(), "ebin"), Path.join(app, "ebin"))
    File.cp!(lib, Path.join(app, "priv/native/elixir_scope_nif.so"))

    {out, 0} =
      System.cmd(
        "elixir",
        ["-pa", Path.join(app, "ebin"), "-e", "IO.inspect(ElixirScope.Native.store_limits())"],
        stderr_to_stdout: true
      )

    assert out =~ "max_events"
  end

  test "plain HTTP is for this machine only", c do
    lib = Path.join(c.dest, "elixir_scope_nif.so")

    assert {:error, :not_https, _} =
             ElixirScopeNative.fetch_precompiled("http://example.com/x", c.sums, c.dest, lib)

    refute File.exists?(lib)
  end

  test "a tampered artifact is refused with a message", c do
    bytes = File.read!(c.artifact)
    File.write!(c.artifact, bytes <> "x")
    lib = Path.join(c.dest, "elixir_scope_nif.so")

    assert {:error, :checksum, _} =
             ElixirScopeNative.fetch_precompiled(c.url, c.sums, c.dest, lib)

    refute File.exists?(lib)

    System.put_env("ELIXIR_SCOPE_PRECOMPILED_URL", c.url)

    try do
      error = assert_raise Mix.Error, fn -> ElixirScopeNative.precompiled(c.root, c.dest, lib) end
      assert error.message =~ "does not match its checksum"
      assert error.message =~ "ELIXIR_SCOPE_BUILD=true"
    after
      System.delete_env("ELIXIR_SCOPE_PRECOMPILED_URL")
    end
  end

  test "a missing artifact falls back to building with cargo, or says what to do without", c do
    File.rm!(c.artifact)
    lib = Path.join(c.dest, "elixir_scope_nif.so")

    assert {:error, {:http, 404}, _} =
             ElixirScopeNative.fetch_precompiled(c.url, c.sums, c.dest, lib)

    System.put_env("ELIXIR_SCOPE_PRECOMPILED_URL", c.url)
    saved = for k <- ["PATH", "HOME"], do: {k, System.get_env(k)}

    try do
      assert :build = ElixirScopeNative.precompiled(c.root, c.dest, lib)

      System.put_env("PATH", "/nonexistent")
      System.put_env("HOME", c.dest)
      error = assert_raise Mix.Error, fn -> ElixirScopeNative.precompiled(c.root, c.dest, lib) end
      assert error.message =~ "no cargo to build one"
      assert error.message =~ "rustup"
    after
      Enum.each(saved, fn {k, v} -> System.put_env(k, v) end)
      System.delete_env("ELIXIR_SCOPE_PRECOMPILED_URL")
    end
  end
end
