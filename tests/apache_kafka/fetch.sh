#!/bin/sh
# Fetches Apache Kafka's broker (org.apache.kafka:kafka_2.13, version in pom.xml beside this script) and all
# its run-time jars from Maven Central into build/apache-kafka/lib, for tests/apache_kafka.py. Idempotent:
# when the jars of this very pom.xml are already there it returns at once, without starting Maven.
# Maven is Debian's (`apt-get install maven`, 3.8.x), on the machine already; jars are cached in ~/.m2.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
lib=$(cd "$here/../.." && pwd)/build/apache-kafka/lib
stamp="$lib/.fetched"
key=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    exit 0
fi
if ! command -v mvn >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "fetch.sh: installing Debian's maven" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends maven >&2
    else
        echo "fetch.sh: needs Maven (mvn): apt-get install maven" >&2
        exit 1
    fi
fi
# A different pom.xml (another Kafka version): start from an empty directory, so that no jar of the old
# version stays on the broker's classpath beside the new one.
rm -rf "$lib"
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies
echo "$key" > "$stamp"
echo "fetch.sh: $(ls "$lib" | wc -l) jars in $lib" >&2
