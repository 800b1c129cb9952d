// Package deploy holds no code: its tests check the container image, the
// docker-compose.yml and the Helm chart against the binary they deploy.
package deploy
