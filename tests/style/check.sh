#!/usr/bin/env bash
# Meridian's style checker (ctest: style.check). Looks at the .c and .h files
# of common/ controller/ agent/ cli/ include/ and prints one line per offence,
# "file:line: why", for:
#   - banned functions: sprintf vsprintf strcpy strcat gets strtok (use
#     snprintf, vsnprintf, memcpy with a length, strtok_r);
#   - lines wider than 100 columns (UTF-8 characters, tabs to 8);
#   - a .c file that does not open with a /* comment block */;
#   - a non-static function defined in common/*.c whose name lacks mrd_;
#   - a file that clang-format would change (only if clang-format exists).
# Comments and string literals are blanked before the code checks, so a
# comment that names a banned function is not an offence.
#
#   tests/style/check.sh [ROOT]       exit 0 clean, 1 offences, 2 checker broken
#   tests/style/check.sh --self-test  only checks the checker on a bad tree
# (the first form runs the self-test first, quietly).
set -u
export LC_ALL=C

# Runs in a subshell: its cd must not leak to the caller.
check_tree() (
    local root=$1
    cd "$root" || { echo "check.sh: cannot enter $root" >&2; return 2; }
    local files=() d
    for d in common controller agent cli include; do
        [ -d "$d" ] || continue
        while IFS= read -r f; do files+=("$f"); done \
            < <(find "$d" -type f \( -name '*.c' -o -name '*.h' \) | sort)
    done
    [ ${#files[@]} -gt 0 ] || { echo "check.sh: no sources under $root" >&2; return 0; }

    local out
    out=$(awk -v sq="'" '
    # Returns line with comments and string/char literals blanked (same length).
    function strip(line,    out, i, n, c, nx) {
        out = ""; n = length(line); i = 1; instr = 0
        while (i <= n) {
            c = substr(line, i, 1); nx = substr(line, i + 1, 1)
            if (incom) {
                if (c == "*" && nx == "/") { incom = 0; out = out "  "; i += 2 }
                else { out = out " "; i++ }
            } else if (instr) {
                if (c == "\\") { out = out "  "; i += 2 }
                else if (c == q) { instr = 0; out = out c; i++ }
                else { out = out " "; i++ }
            } else if (c == "/" && nx == "*") { incom = 1; out = out "  "; i += 2 }
            else if (c == "/" && nx == "/") { while (i <= n) { out = out " "; i++ } }
            else if (c == "\"" || c == sq) { instr = 1; q = c; out = out c; i++ }
            else { out = out c; i++ }
        }
        return out
    }
    function columns(line,    s, i, col, c) {
        s = line
        gsub(/[\200-\277]/, "", s)          # UTF-8 continuation bytes
        if (index(s, "\t") == 0) return length(s)
        col = 0
        for (i = 1; i <= length(s); i++) {
            c = substr(s, i, 1)
            if (c == "\t") col = col + 8 - col % 8; else col++
        }
        return col
    }
    function report(line, why) { printf "%s:%d: %s\n", FILENAME, line, why }
    function end_file() {
        if (FILENAME_prev != "" && is_c && !opened)
            printf "%s:1: does not open with a comment block\n", FILENAME_prev
    }
    FNR == 1 {
        end_file()
        FILENAME_prev = FILENAME
        is_c = FILENAME ~ /\.c$/
        is_common = FILENAME ~ /^common\/[^\/]*\.c$/
        opened = 0; incom = 0; cand = 0; await = 0; wide = 0
    }
    {
        raw = $0
        if (!opened && raw !~ /^[ \t]*$/) {
            opened = 1
            if (is_c && raw !~ /^\/\*/)
                report(FNR, "does not open with a comment block")
        }
        # Tables kept wide on purpose sit between clang-format off/on markers.
        if (raw ~ /clang-format off/) wide = 1
        if (raw ~ /clang-format on/) wide = 0
        w = columns(raw)
        if (w > 100 && !wide)
            report(FNR, "line is " w " columns wide (limit 100)")

        code = strip(raw)
        nb = split("sprintf vsprintf strcpy strcat gets strtok", banned, " ")
        for (k = 1; k <= nb; k++) {
            if (code ~ ("(^|[^A-Za-z0-9_])" banned[k] "[ \t]*\\("))
                report(FNR, "banned function " banned[k] "()")
        }

        if (!is_common) next
        # Function definitions at column 0 whose parameter list may span lines.
        if (await) {
            if (code ~ /^[ \t]*$/) next
            if (code ~ /^\{/) check_name()
            await = 0
        }
        if (!cand && code ~ /^[A-Za-z_]/ && code !~ /^(typedef|extern|struct|union|enum)[ \t{]/ &&
            index(code, "(") > 0 && (index(code, "=") == 0 || index(code, "=") > index(code, "("))) {
            cand = 1; text = ""; depth = 0; cand_line = FNR
        }
        if (cand) {
            text = text " " code
            depth = 0; closed = 0
            for (i = 1; i <= length(text); i++) {
                c = substr(text, i, 1)
                if (c == "(") depth++
                else if (c == ")") { depth--; if (depth == 0) { closed = i; break } }
            }
            if (closed) {
                cand = 0
                rest = substr(text, closed + 1)
                if (rest ~ /\{/) check_name()
                else if (rest !~ /[;=,]/) await = 1
            }
        }
    }
    function check_name(    head, name) {
        head = substr(text, 1, index(text, "(") - 1)
        if (head ~ /(^|[ \t*])static([ \t*]|$)/) return
        if (!match(head, /[A-Za-z_][A-Za-z0-9_]*[ \t]*$/)) return
        name = substr(head, RSTART, RLENGTH)
        sub(/[ \t]+$/, "", name)
        if (name !~ /^mrd_/)
            printf "%s:%d: public function %s must be static or start with mrd_ (mrd__ internal)\n",
                   FILENAME, cand_line, name
    }
    END { end_file() }
    ' "${files[@]}")

    # awk never sees an empty file.
    local f
    for f in "${files[@]}"; do
        if [[ $f == *.c && ! -s $f ]]; then
            out=${out:+$out$'\n'}"$f:1: does not open with a comment block"
        fi
    done

    if command -v clang-format >/dev/null 2>&1; then
        local cf
        cf=$(clang-format --dry-run -Werror "${files[@]}" 2>&1 |
            sed -n 's/^\(.*\):\([0-9][0-9]*\):[0-9][0-9]*: error: code should be clang-formatted.*/\1:\2: not formatted per clang-format (run clang-format -i)/p' |
            uniq)
        [ -n "$cf" ] && out=${out:+$out$'\n'}$cf
    else
        echo "check.sh: clang-format not found, formatting not checked" >&2
    fi

    if [ -n "$out" ]; then
        printf '%s\n' "$out"
        echo "check.sh: $(printf '%s\n' "$out" | wc -l) offence(s) in ${#files[@]} files" >&2
        return 1
    fi
    echo "check.sh: ${#files[@]} files clean" >&2
    return 0
)

# Builds a small tree with one offence of each kind (and look-alikes that are
# fine) and checks that exactly the offences are reported.
self_test() {
    local tmp rc=0
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/mrd-style.XXXXXX") || return 2
    mkdir -p "$tmp/common" "$tmp/include/meridian" "$tmp/cli"
    cp "$(dirname "$0")/../../.clang-format" "$tmp/" 2>/dev/null
    cat >"$tmp/common/good.c" <<'EOF'
/*
 * Fine: snprintf, vsnprintf, strncpy, strtok_r, fgets, a comment naming
 * sprintf() and a string "strcpy(" are not offences.
 */
#include <stdio.h>
#include <string.h>

static int helper(void)
{
    return 0;
}

int mrd_good_run(char *buf, size_t len, char *s, char **save, FILE *f)
{
    snprintf(buf, len, "strcat(%d)", helper()); /* gets() */
    strtok_r(s, " ", save);
    return fgets(buf, (int)len, f) != NULL;
}

int mrd__good_internal(int a,
                       int b)
{
    return a + b;
}
EOF
    cat >"$tmp/common/bad.c" <<'EOF'
#include <string.h>

int bad_public(char *a, const char *b)
{
    strcpy(a, b);
    return 0;
}

int other_bad(char *a,
              const char *b)
{
    sprintf(a, "%s", b); strcat(a, b); strtok(a, " ");
    return 0;
}
/* aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa */
EOF
    cat >"$tmp/include/meridian/bad.h" <<'EOF'
/* Header. */
#define MRD_COPY(a, b) vsprintf(a, b)
int mrd_decl(void);
int undeclared_but_only_declared(void);
EOF
    cat >"$tmp/cli/empty.c" </dev/null
    local want got
    want="common/bad.c:1: does not open with a comment block
common/bad.c:3: public function bad_public must be static or start with mrd_ (mrd__ internal)
common/bad.c:5: banned function strcpy()
common/bad.c:9: public function other_bad must be static or start with mrd_ (mrd__ internal)
common/bad.c:12: banned function sprintf()
common/bad.c:12: banned function strcat()
common/bad.c:12: banned function strtok()
common/bad.c:15: line is 104 columns wide (limit 100)
include/meridian/bad.h:2: banned function vsprintf()
cli/empty.c:1: does not open with a comment block"
    got=$(check_tree "$tmp" 2>/dev/null | grep -v 'clang-format')
    if [ "$(printf '%s\n' "$got" | sort)" != "$(printf '%s\n' "$want" | sort)" ]; then
        echo "self-test: wrong offences" >&2
        diff <(printf '%s\n' "$want" | sort) <(printf '%s\n' "$got" | sort) >&2
        rc=1
    fi
    if command -v clang-format >/dev/null 2>&1 &&
        ! check_tree "$tmp" 2>/dev/null | grep -q '^common/bad.c:[0-9]*: not formatted per clang-format'; then
        echo "self-test: clang-format offence not reported" >&2
        rc=1
    fi
    if check_tree "$tmp" >/dev/null 2>&1; then
        echo "self-test: a bad tree passed" >&2
        rc=1
    fi
    rm -rf "$tmp"
    [ $rc = 0 ] && echo "self-test: ok" >&2
    return $rc
}

case "${1:-}" in
--self-test) self_test ;;
-h | --help) sed -n '2,16p' "$0" ;;
*)
    # A checker that silently stopped finding offences would pass every tree.
    if ! self_test 2>/dev/null; then
        echo "check.sh: the checker fails its own self-test (run $0 --self-test)" >&2
        exit 2
    fi
    check_tree "${1:-$(cd "$(dirname "$0")/../.." && pwd)}"
    ;;
esac
