# bash completion for mycel (installed to share/bash-completion/completions/mycel).
# The command list is checked against `mycel --help` by tests/package/package_test.sh.
_mycel() {
  local cur prev words cword
  _init_completion 2>/dev/null || {
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  }
  local commands="status pause resume ingest eval predict export id repair peers data forget reset reload doctor history help"
  case $prev in
    -c | --config | --out)
      compopt -o filenames 2>/dev/null
      COMPREPLY=($(compgen -f -- "$cur"))
      return
      ;;
    --socket)
      COMPREPLY=($(compgen -f -- "$cur"))
      return
      ;;
    --format)
      COMPREPLY=($(compgen -W "idx csv text" -- "$cur"))
      return
      ;;
  esac
  # The command: the first word that is not an option or an option's value.
  local i command="" sub=""
  for ((i = 1; i < cword; i++)); do
    case ${words[i]} in
      -c | --config | --socket) ((i++)) ;;
      -*) ;;
      *)
        if [[ -z $command ]]; then command=${words[i]}; elif [[ -z $sub ]]; then sub=${words[i]}; fi
        ;;
    esac
  done
  local opts="--config --socket --help"
  case $command in
    "") COMPREPLY=($(compgen -W "$commands --config --socket --version --help" -- "$cur")) ;;
    help) COMPREPLY=($(compgen -W "$commands" -- "$cur")) ;;
    status) COMPREPLY=($(compgen -W "--json --watch --interval $opts" -- "$cur")) ;;
    ingest)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--format --json --no-progress --labels --key --retry $opts" -- "$cur"))
      else
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
      fi
      ;;
    eval | predict)
      if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--format --json --index --values --text --top --generate $opts" -- "$cur"))
      else
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -- "$cur"))
      fi
      ;;
    export) COMPREPLY=($(compgen -W "--out $opts" -- "$cur")) ;;
    id | data) COMPREPLY=($(compgen -W "--json --ingests $opts" -- "$cur")) ;;
    repair) COMPREPLY=($(compgen -W "--force $opts" -- "$cur")) ;;
    history) COMPREPLY=($(compgen -W "--json --since $opts" -- "$cur")) ;;
    forget) COMPREPLY=($(compgen -W "--all --label --before --ingest --json $opts" -- "$cur")) ;;
    peers)
      case $sub in
        "") COMPREPLY=($(compgen -W "pending add accept remove --json $opts" -- "$cur")) ;;
        pending) COMPREPLY=($(compgen -W "--json $opts" -- "$cur")) ;;
        accept) COMPREPLY=($(compgen -W "--address --dials-in --name $opts" -- "$cur")) ;;
        add) COMPREPLY=($(compgen -W "--dials-in $opts" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
      esac
      ;;
    *) COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
  esac
}
complete -F _mycel mycel
