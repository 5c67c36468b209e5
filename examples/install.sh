#!/bin/sh
# Runs on the first master before the applications launch.
set -eu
kubectl create namespace shop --dry-run=client -o yaml | kubectl apply -f -
