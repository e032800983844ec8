# Sourced by every Bash call through BASH_ENV, before the user's code.
# It moves the shell into the call's cgroup, so a timeout can end the call's whole process
# tree, and saves the working directory and exported variables on exit for the next call.
if [ -n "${HEARTH_CGROUP_PROCS:-}" ]; then
  builtin echo "$$" >"$HEARTH_CGROUP_PROCS"
fi
__hearth_state_file=$HEARTH_STATE_FILE
unset BASH_ENV HEARTH_CGROUP_PROCS HEARTH_STATE_FILE

__hearth_save_state() {
  local name
  {
    builtin printf '%s\0' "$PWD"
    for name in $(builtin compgen -e); do
      builtin printf '%s=%s\0' "$name" "${!name}"
    done
  } >"$__hearth_state_file"
}
trap __hearth_save_state EXIT
