#!/bin/bash
# Trains VSAIT on a Cloud TPU VM slice: creates it if missing, installs this
# checkout on every worker, runs the same command on all of them, streams logs.
#
#   launch/tpu_pod.sh --project=P --zone=us-central2-b --accelerator=v4-32 --name=vsait \
#       --config=configs/vsait.py --workdir=gs://BUCKET/runs/vsait -- --config.KEY=VALUE ...
#   launch/tpu_pod.sh ... --dry-run      prints every gcloud command, runs nothing
#
# Flags:
#   --project, --zone, --name        the TPU VM (required)
#   --accelerator=TYPE               e.g. v4-32, v5litepod-16 (required to create)
#   --version=RUNTIME                TPU software version for create
#                                    (default tpu-ubuntu2204-base)
#   --spot                           create a Spot slice (preemptible)
#   --config=FILE                    a config file under configs/ of this checkout
#   --workdir=gs://...               checkpoints and TensorBoard events (GCS: the
#                                    workers share no disk)
#   --package=SPEC                   pip requirement to install instead of a wheel
#                                    of this checkout, e.g.
#                                    'i2i_jax[tpu] @ git+https://github.com/ORG/i2i_jax@REF'
#   --skip-install                   the workers already have the package
#   --detach                         start training in the background on every
#                                    worker (survives a dropped ssh) and follow
#                                    worker 0's log; Ctrl-C stops only the following
#   --dry-run                        print the commands
#   -- ARGS...                       passed to python -m i2i_jax.train (--config.* overrides)
#
# Every worker logs to ~/i2i_jax/train.log. Training resumes from the
# workdir's last checkpoint, so rerunning after a preemption continues the run.

set -euo pipefail

project="" zone="" name="" accelerator="" version="tpu-ubuntu2204-base" spot=""
config="" workdir="" package="" skip_install="" detach="" dry_run=""
train_overrides=()

usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --project=*) project="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --name=*) name="${1#*=}" ;;
    --accelerator=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --spot) spot=1 ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --package=*) package="${1#*=}" ;;
    --skip-install) skip_install=1 ;;
    --detach) detach=1 ;;
    --dry-run) dry_run=1 ;;
    --) shift; train_overrides=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "tpu_pod.sh: unknown argument $1 (train flags go after --)" >&2; exit 2 ;;
  esac
  shift
done

for flag in project zone name config workdir; do
  if [[ -z "${!flag}" ]]; then
    echo "tpu_pod.sh: --${flag} is required" >&2
    exit 2
  fi
done
if [[ "${workdir}" != gs://* ]]; then
  echo "tpu_pod.sh: --workdir=${workdir} must be gs://...: the workers of a slice share no disk" >&2
  exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -f "${repo}/${config}" ]]; then
  echo "tpu_pod.sh: --config=${config} is not a file under ${repo}" >&2
  exit 2
fi

# Shell-quotes an argument only when it needs it, so printed commands read easily.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Runs a command, or prints it under --dry-run.
run() {
  if [[ -n "${dry_run}" ]]; then
    local out="" arg
    for arg in "$@"; do out+="$(quote "${arg}") "; done
    echo "${out% }"
  else
    "$@"
  fi
}

tpu=(gcloud compute tpus tpu-vm)
where=(--zone="${zone}" --project="${project}")
remote_dir="i2i_jax"

# 1. The slice: reuse it, or create it (a dry run prints the create when
#    --accelerator is given).
if [[ -n "${dry_run}" ]]; then
  echo "# reuse the slice if this succeeds, else create it:"
  run "${tpu[@]}" describe "${name}" "${where[@]}"
  exists="$([[ -n "${accelerator}" ]] || echo "unknown")"
else
  exists="$("${tpu[@]}" describe "${name}" "${where[@]}" --format='value(state)' 2>/dev/null || true)"
fi
if [[ -z "${exists}" ]]; then
  if [[ -z "${accelerator}" ]]; then
    echo "tpu_pod.sh: TPU ${name} does not exist; give --accelerator=TYPE to create it" >&2
    exit 2
  fi
  run "${tpu[@]}" create "${name}" "${where[@]}" --accelerator-type="${accelerator}" \
      --version="${version}" ${spot:+--spot}
fi

# 2. Install: a wheel of this checkout (or --package) and the configs on every worker.
ssh_all=("${tpu[@]}" ssh "${name}" "${where[@]}" --worker=all)
run "${ssh_all[@]}" --command="mkdir -p ~/${remote_dir}"
run "${tpu[@]}" scp --recurse "${repo}/configs" "${name}:~/${remote_dir}/" "${where[@]}" --worker=all
if [[ -z "${skip_install}" ]]; then
  # gcsfs and google-cloud-storage: etils epath and tensorboardX on gs:// paths.
  extras=(gcsfs google-cloud-storage)
  if [[ -z "${package}" ]]; then
    wheel_dir="${repo}/dist"
    run python -m pip wheel --no-deps --wheel-dir="${wheel_dir}" "${repo}"
    version_number="$(sed -n 's/^version = "\(.*\)"/\1/p' "${repo}/pyproject.toml")"
    wheel="i2i_jax-${version_number}-py3-none-any.whl"
    run "${tpu[@]}" scp "${wheel_dir}/${wheel}" "${name}:~/${remote_dir}/" "${where[@]}" --worker=all
    package="\$HOME/${remote_dir}/${wheel}[tpu]"
  fi
  run "${ssh_all[@]}" --command="python3 -m pip install --upgrade \"${package}\" ${extras[*]}"
fi

# 3. Train: the same command on every worker; jax.distributed finds the slice's
#    other hosts itself (I2I_JAX_DISTRIBUTED=1 tells i2i_jax.sharding to start it).
train="python3 -m i2i_jax.train --config=$(quote "${config}") --workdir=$(quote "${workdir}")"
for arg in "${train_overrides[@]}"; do train+=" $(quote "${arg}")"; done
log="~/${remote_dir}/train.log"
prefix="cd ~/${remote_dir} && export I2I_JAX_DISTRIBUTED=1"
if [[ -n "${detach}" ]]; then
  run "${ssh_all[@]}" --command="${prefix} && nohup ${train} > ${log} 2>&1 < /dev/null &"
  run "${tpu[@]}" ssh "${name}" "${where[@]}" --worker=0 --command="tail -F ${log}"
else
  run "${ssh_all[@]}" --command="set -o pipefail; ${prefix} && ${train} 2>&1 | tee ${log}"
fi
