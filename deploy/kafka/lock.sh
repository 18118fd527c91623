#!/usr/bin/env bash
# lock.sh — regenerate streams/broker/kafka.lock from deploy/kafka/pom.xml.
#
# Why: the product fetches the broker's jars itself, from Maven Central (or a mirror),
# and runs nothing whose sha256 is not in the lock. Maven resolves the dependency tree
# once, here, on a developer's machine; it is not needed to run the broker.
#
# Usage: bash deploy/kafka/lock.sh           (needs mvn; writes the lock in place)
# After a version bump in pom.xml: run it, review the diff, commit pom and lock together.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCK="$HERE/../../streams/broker/kafka.lock"
command -v mvn >/dev/null || { echo "lock.sh: mvn not found (Debian: apt-get install maven)" >&2; exit 1; }

list="$(mktemp)"
trap 'rm -f "$list"' EXIT
mvn -q -B -f "$HERE/pom.xml" dependency:list -DincludeScope=runtime \
    -DoutputAbsoluteArtifactFilename=true -DoutputFile="$list" >/dev/null

{
    echo "# Apache Kafka broker jars: Maven coordinates (group:artifact:version) and sha256."
    echo "# Generated from deploy/kafka/pom.xml by: bash deploy/kafka/lock.sh  (do not edit by hand)"
    # "   group:artifact:jar:version:scope:/path/to.jar -- module ..." -> "group:artifact:version sha256"
    grep -E '^ +[^ ]+:jar:' "$list" | sed -E 's/^ +//; s/ -- .*$//' | while IFS=: read -r group artifact _ version _ path; do
        echo "$group:$artifact:$version $(sha256sum "$path" | cut -d' ' -f1)"
    done | sort
} >"$LOCK"
echo "lock.sh: wrote $(grep -vc '^#' "$LOCK") jars to $LOCK" >&2
