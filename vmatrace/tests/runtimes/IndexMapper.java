import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.RandomAccessFile;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Maps index files as a Kafka broker's log segments do (AbstractIndex maps
 * each segment's index with FileChannel.map): a test workload of vmatrace.
 *
 * java IndexMapper DIR WARM MORE: maps DIR/warm.index WARM times (the
 * mappings are dropped), so that the JIT compiles the mapping path, says
 * "warm pid=N" on stderr and waits for a line on stdin (a perf map can be
 * written meanwhile); then maps MORE index files and keeps them, says
 * "mapped pid=N" and waits for a line again before it exits.
 */
public class IndexMapper {
    static final int INDEX_BYTES = 2 * 4096;
    static final List<MappedByteBuffer> kept = new ArrayList<>();

    static MappedByteBuffer mapIndexFile(Path file) throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(INDEX_BYTES);
            return f.getChannel().map(FileChannel.MapMode.READ_WRITE, 0, INDEX_BYTES);
        }
    }

    static void openSegments(Path dir, int from, int count) throws Exception {
        for (int i = from; i < from + count; i++) {
            kept.add(mapIndexFile(dir.resolve(String.format("%020d.index", i))));
        }
    }

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[0]);
        int warm = Integer.parseInt(args[1]);
        int more = Integer.parseInt(args[2]);
        long pid = ProcessHandle.current().pid();
        BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in));
        for (int i = 0; i < warm; i++) {
            mapIndexFile(dir.resolve("warm.index"));
        }
        System.err.println("warm pid=" + pid);
        stdin.readLine();
        openSegments(dir, 0, more);
        System.err.println("mapped pid=" + pid);
        stdin.readLine();
    }
}
