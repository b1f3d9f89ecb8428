# chattr/lsattr steps and what immutable and append-only then forbid:
# the same script on the kernel's ext4 and on ext4-fuse must print the
# same (tests/tests/rw_mounts.rs chattr_as_the_kernel). Every line is a
# step's exit status or its words.
d=$1   # the mount point (made world-writable by the caller)
cd $d
echo data > f; mkdir dd; echo x > dd/g
lsattr -d f dd 2>&1 | awk '{print $1}'
chattr +i f; echo "chattr+i $?"; lsattr f | awk '{print $1}'
echo more >> f; echo "append-immutable $?"
rm -f f; echo "rm-immutable $?"
mv f f2; echo "mv-immutable $?"
chmod 600 f; echo "chmod-immutable $?"
touch f; echo "touch-immutable $?"
chattr +d f; echo "chattr+d-on-immutable $?"
chattr -i f; echo "chattr-i $?"
chattr +a f; echo "chattr+a $?"
echo more >> f; echo "append-appendonly $?"
echo over > f; echo "overwrite-appendonly $?"
truncate -s 0 f; echo "truncate-appendonly $?"
rm -f f; echo "rm-appendonly $?"
chattr -a +d +A +S f; echo "chattr-a+dAS $?"; lsattr f | awk '{print $1}'
chattr +a dd; touch dd/new; echo "create-in-appendonly-dir $?"; rm -f dd/g; echo "rm-in-appendonly-dir $?"; chattr -a dd
chattr +i dd; touch dd/new2; echo "create-in-immutable-dir $?"; chattr -i dd
chattr +j f; echo "chattr+j $?"
chattr +e f 2>&1; echo "chattr+e $?"
su nobody -s /bin/sh -c "chattr +d $d/f" 2>&1 | sed 's/.*: //'; 
cat f; rm -f f dd/new; echo "rm $?"
lsattr -d dd | awk '{print $1}'
