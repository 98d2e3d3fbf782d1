#!/bin/bash
# Records what real Slurm prints for the jobs of tests/test_scheduler_golden.py, into this
# folder. Run it on an idle Slurm peer (see ../../../README.md, "Slurm differences"):
#     source /tmp/slurm-peer/env.sh && tests/golden/slurm/record.sh
# The test normalises both sides the same way (job ids, node names, times, paths, user) and
# compares the rest line by line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d /tmp/sn40l-golden-XXXXXX)"
cd "$work"
run() {  # run() NAME CMD...: the command's stdout into NAME.txt
    local name=$1; shift
    "$@" > "$here/$name.txt"
}
blocker=$(sbatch --parsable -J blocker -N2 --gres=rdu:8 -t 10 --wrap 'sleep 30')
waits=$(sbatch --parsable -J waits --gres=rdu:8 -d "afterok:$blocker" -o sub/x.out --wrap true)
sleep 2
run squeue squeue -j "$blocker,$waits"
run squeue-long sh -c "squeue -l -j $blocker,$waits | tail -n +2"
run sinfo sinfo
run sinfo-nodes-long sh -c 'sinfo -N -l | tail -n +2'
run scontrol-running scontrol show job "$blocker"
run scontrol-pending scontrol show job "$waits"
scancel "$blocker" "$waits"
failed=$(sbatch --parsable -J fails -o out.txt --wrap 'exit 3')
sleep 4
run scontrol-failed scontrol show job "$failed"
run sacct-failed sacct -j "$failed" -o JobID,JobName,Partition,State,ExitCode
printf 'blocker=%s\nwaits=%s\nfailed=%s\nworkdir=%s\n' "$blocker" "$waits" "$failed" \
    "$work" > "$here/ids.txt"
rm -rf "$work"
echo "recorded into $here"
