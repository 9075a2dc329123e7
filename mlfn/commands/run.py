"""`mlfn run` and `mlfn invoke`."""
from __future__ import annotations

import click

from mlfn.commands.options import config_option, output_option, project_config, target_from, target_options
from mlfn.output import Progress, emit


@click.command()
@config_option
@click.option("--image", help="Image to run (default: build the function in mlfn.yaml, cached).")
@click.option("--port", type=int, default=None, help="Host port on 127.0.0.1 (default: a free one; 8080 with --no-docker).")
@click.option("--no-docker", is_flag=True, help="Serve in this process with the same mlfn_runtime code, no image.")
@click.option("--stop", is_flag=True, help="Stop and remove the function's container started earlier.")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="Environment variable for the function.")
@output_option
def run(config_path, image, port, no_docker, stop, env, output):
    """Start the function locally and print its URL.

    With Docker (default) the image runs detached as container mlfn-NAME-<project hash>, the way the
    platforms run it (read-only root, writable /tmp, non-root user); the command returns
    once the function answers its health check. With --no-docker the function is served
    in the foreground from this process.

    \b
    Examples:
      mlfn run                          # build if needed, run, print http://127.0.0.1:PORT
      mlfn invoke http://127.0.0.1:PORT --image samples/digits/inputs/digit-3.png
      mlfn run --stop
    """
    from mlfn.config import load_config
    from mlfn import runner

    bad = [kv for kv in env if "=" not in kv or not kv.split("=", 1)[0]]
    if bad:
        raise click.BadParameter(f"'{bad[0]}' is not KEY=VALUE (e.g. -e MLFN_SERVING_INTERPRETER=lock).",
                                 param_hint="--env")
    environment = dict(kv.split("=", 1) for kv in env)
    cfg = load_config(config_path, required=image is None)
    name = runner.container_name(cfg.name if cfg.source else None, cfg.project_dir if cfg.source else None, image)
    if stop:
        removed = runner.stop_container(name)
        emit({"container": name, "stopped": removed}, output,
             lambda r: f"Stopped {name}." if removed else f"No container {name} is running.")
        return
    progress = Progress(quiet=output == "json")
    if no_docker:
        runner.check_port_free(port or 8080)
        from mlfn.image import stage_function
        from mlfn_runtime import serve

        fdir = stage_function(cfg, cfg.project_dir / ".mlfn" / "run", progress=progress)
        click.echo(f"Serving {cfg.name} on http://127.0.0.1:{port or 8080} (Ctrl-C to stop)", err=True)
        serve(str(fdir), host="127.0.0.1", port=port or 8080)
        return
    if not image:
        from mlfn.image import build_image

        image = build_image(cfg, progress=progress).image
    result = runner.run_container(image, name=name, port=port, env=environment)
    emit(result, output, lambda r: f"{r.url}\n(container {r.name}, ready in {r.ready_ms:.0f} ms; stop with 'mlfn run --stop')")


@click.command()
@click.argument("ref", metavar="URL|NAME[@ALIAS|:vN]")
@click.option("--image", "-i", "images", multiple=True, type=click.Path(), help="Image file to send (repeat for a batch).")
@click.option("--json", "-j", "json_input", help="JSON request: a file or a literal document.")
@click.option("--model", help="Model to ask when the function bundles several.")
@click.option("--protocol", type=click.Choice(["predict", "openwhisk", "v2", "v1", "grpc"]), default="predict",
              show_default=True, help="With a URL: which endpoint to call (openwhisk = /init then /run; v2 = OIP v2 /v2/models/M/infer, v1 = TF Serving :predict, both answer the model's raw tensors; grpc = OIP v2 ModelInfer over gRPC on the same port, for functions built with serving.grpc: true, run with 'mlfn run' or deployed on Knative (URL or NAME); OpenWhisk's controller does not pass gRPC).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--repeat", type=click.IntRange(1, 100000), default=1,
              help="Deployed functions: invoke N times and count which version served (watch a canary).")
@config_option
@target_options
@output_option
def invoke(ref, images, json_input, model, protocol, timeout, repeat, config_path, output, **kw):
    """Send an image or JSON to a function and print the result.

    The first argument is the URL of a running function (from 'mlfn run'), or a deployed
    function: NAME (default alias), NAME@ALIAS, or NAME:vN for one version.

    \b
    Examples:
      mlfn invoke http://127.0.0.1:8080 --image digit-3.png
      mlfn invoke http://127.0.0.1:8080 --protocol openwhisk --json '{"inputs": [[...]]}'
      mlfn invoke http://127.0.0.1:8080 --protocol v2 --image digit-3.png   # KServe/Triton
      mlfn invoke http://127.0.0.1:8080 --protocol grpc --image digit-3.png # serving.grpc: true
      mlfn invoke http://digits.default.example.com --protocol grpc --host 127.0.0.1:31080 --image digit-3.png
      mlfn invoke digits@canary --target knative --protocol grpc --image digit-3.png  # not on OpenWhisk
      mlfn invoke digits@canary --image digit-3.png --output json
      mlfn invoke digits --image digit-3.png --repeat 200   # served by: v1 90%, v2 10%
    """
    from mlfn import client

    payload = client.build_payload(images, json_input, model)
    if ref.startswith(("http://", "https://")):
        if repeat > 1:
            raise click.UsageError("--repeat counts which version served a deployed function (NAME[@ALIAS]); "
                                   f"{ref} is one running function, so drop --repeat.")
        res = client.invoke_url(ref, payload, protocol=protocol, timeout=timeout,
                                host=kw.get("host") if protocol == "grpc" else None)
        emit(res, output, lambda r: client.summarize(r["result"]))
        return
    # NAME[@ALIAS|:vN]: a deployed function, through the deploy target (mlfn.releases.invoke).
    client.check_strict_json(payload)
    from mlfn.releases import invoke as invoke_deployed, invoke_repeated

    if repeat > 1 and protocol == "grpc":
        raise click.UsageError("--repeat counts versions through the platform's invoke; drop --protocol grpc.")
    if repeat > 1:
        summary = invoke_repeated(ref, payload, repeat, options=target_from(kw), cfg=project_config(config_path),
                                  timeout=timeout)
        emit(summary, output, lambda s: "served by: " + ", ".join(
            f"{v} {c} ({s.share[v]:.0%})" for v, c in s.served.items())
            + f"\nlatency p50 {s.latency_ms_p50} ms, p90 {s.latency_ms_p90} ms over {s.calls} calls")
        return
    res = invoke_deployed(ref, payload, options=target_from(kw), cfg=project_config(config_path), timeout=timeout,
                          protocol=protocol)
    emit(res, output, lambda r: f"{client.summarize(r.result)}\n(served by {r.version or '?'}, "
                                f"activation {r.activation_id or '-'}, {r.duration_ms} ms)")
